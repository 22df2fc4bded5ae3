--[[
meet_messages: an instance's chat in order, or one user's messages in it
(read through that user's index: other users' messages are not touched), a
page at a time. A message's time is its id's first part (entries written
before version 0.2 also carry it as `at`).

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  order id, or '' for the meeting's running instance
ARGV[2]  user id, or '' for everybody's (optional)
ARGV[3]  after: a message id, the `next` of the previous page (optional)
ARGV[4]  limit: 1..1000 (optional, default 1000)
ARGV[5]  budget: the most bytes the page may take in a reply (optional;
         at least one message is returned): a page cut short has `next`
ARGV[6]  shape: 'packed' for the messages in one string (optional)
ARGV[7]  now (ms; optional, Redis TIME when left out or ''): with no order, the
         instance running by the clock (see meet_current)
Returns: {order, <order>, next, <id or nil>, messages,
  {{id, {u, <user>, text, <text>}}...}}; `next` is the id to pass as
  `after` for the following page, nil at the end. Packed, `messages` is
  one string: per message `<id> <user> <at> <bytes> <text>`, `at` empty
  (the id's time) but for messages stored before 0.2, `bytes` the length
  of the text, the next message right after it.
Errors: BAD_REQUEST, NOT_FOUND (meeting or instance), INACTIVE (no order
  and nothing runs).
Flags: no-writes.
]]
-- A page of one user's messages in `chat`, read through the user's index
-- (other users' messages are not touched): next and entries, as
-- stream_page gives them.
local function user_page(chat, user, after, limit, budget)
  local next_id, index = stream_page(chat .. ':by:' .. user, after, limit)
  local entries = {}
  for _, entry in ipairs(index) do
    local found = redis.call('XRANGE', chat, entry[1], entry[1])
    if found[1] then
      entries[#entries + 1] = found[1]
    end
  end
  local cut
  entries, cut = within(entries, budget)
  if cut then
    next_id = entries[#entries][1]
  end
  return next_id, entries
end

local function messages(keys, args)
  check_arity(args, 1, 7, 'order[, user[, after[, limit[, budget[, shape[, now]]]]]]')
  local base, meeting = meeting_key(keys[1])
  optional_id(args[1], 'order')
  local user = optional_id(args[2], 'user')
  local after = check_cursor(args[3])
  local limit = check_limit(args[4])
  local budget = check_budget(args[5])
  local packed = check_packed(args[6])
  local inst = find_by_clock(base, meeting, args[1], clock(args[7]))
  local chat = base .. 'chat:' .. inst.name
  local next_id, entries
  if user then
    next_id, entries = user_page(chat, user, after, limit, budget)
  else
    next_id, entries = stream_page(chat, after, limit, budget)
  end
  if packed then
    entries = pack_messages(entries)
  end
  return { 'order', inst.order, 'next', next_id, 'messages', entries }
end

redis.register_function {
  function_name = 'meet_messages',
  callback = messages,
  flags = { 'no-writes' },
}
