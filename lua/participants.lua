--[[
meet_participants: who is in an instance now, in join order, a page at a
time. An instance that is not active has nobody in it.

KEYS[1]  meetingd:{p<P>}:schedule:<meeting>
KEYS[2]  meetingd:{p<P>}:present:<meeting>/<order>
ARGV[1]  meeting id
ARGV[2]  order id
ARGV[3]  after: a user id, the last of the previous page (optional, '' for
         the first page)
ARGV[4]  limit: 1..1000 (optional, default 1000)
Returns: {user, joined_at, user, joined_at, ...}.
Errors: BAD_REQUEST, NOT_FOUND (instance), NOT_JOINED (the `after` user is
  no longer in: page again from the start).
Flags: no-writes.
]]
local function participants(keys, args)
  check_arity(args, 2, 4, 'meeting, order[, after[, limit]]')
  local tag = partition_tag(keys)
  local meeting = check_id(args[1], 'meeting')
  local order = check_id(args[2], 'order')
  expect_keys(keys, { key(tag, 'schedule', meeting), key(tag, 'present', instance_name(meeting, order)) })
  local after = nil
  if args[3] and args[3] ~= '' then
    after = check_id(args[3], 'after')
  end
  local limit = check_limit(args[4])
  local inst = find_instance(keys[1], meeting, order)
  return present_page(keys[2], inst, after, limit)
end

redis.register_function {
  function_name = 'meet_participants',
  callback = guard(participants),
  flags = { 'no-writes' },
}
