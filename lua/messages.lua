--[[
meet_messages: an instance's chat in order, or one user's messages in it
(read through that user's index: other users' messages are not touched), a
page at a time.

KEYS[1]  meetingd:{p<P>}:schedule:<meeting>
KEYS[2]  meetingd:{p<P>}:chat:<meeting>/<order>
KEYS[3]  meetingd:{p<P>}:chat:<meeting>/<order>:by:<user>  (only with a user)
ARGV[1]  meeting id
ARGV[2]  order id
ARGV[3]  user id, or '' for everybody's (optional)
ARGV[4]  after: a message id, the `next` of the previous page (optional)
ARGV[5]  limit: 1..1000 (optional, default 1000)
Returns: {next, id or nil, messages, {{id, {u, user, text, text, at, ms}}...}}
  `next` is the id to pass as `after` for the following page, nil at the end.
Errors: BAD_REQUEST, NOT_FOUND (instance).
Flags: no-writes.
]]
local function messages(keys, args)
  check_arity(args, 2, 5, 'meeting, order[, user[, after[, limit]]]')
  local tag = partition_tag(keys)
  local meeting = check_id(args[1], 'meeting')
  local order = check_id(args[2], 'order')
  local name = instance_name(meeting, order)
  local user = nil
  if args[3] and args[3] ~= '' then
    user = check_id(args[3], 'user')
  end
  local names = { key(tag, 'schedule', meeting), key(tag, 'chat', name) }
  if user then
    names[3] = key(tag, 'chat', name, 'by', user)
  end
  expect_keys(keys, names)
  local after = check_cursor(args[4])
  local limit = check_limit(args[5])
  find_instance(keys[1], meeting, order)
  if not user then
    local next_id, entries = stream_page(keys[2], after, limit)
    return { 'next', next_id, 'messages', entries }
  end
  local next_id, index = stream_page(keys[3], after, limit)
  local entries = {}
  for _, entry in ipairs(index) do
    local found = redis.call('XRANGE', keys[2], entry[1], entry[1])
    if found[1] then
      entries[#entries + 1] = found[1]
    end
  end
  return { 'next', next_id, 'messages', entries }
end

redis.register_function {
  function_name = 'meet_messages',
  callback = guard(messages),
  flags = { 'no-writes' },
}
