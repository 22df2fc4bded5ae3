--[[
meet_attendance: when each current participant of an instance joined, with
the meeting's title, a page at a time (a row of ATTENDANCE).

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
KEYS[2]  meetingd:{p<P>}:schedule:<meeting>
KEYS[3]  meetingd:{p<P>}:present:<meeting>/<order>
ARGV[1]  meeting id
ARGV[2]  order id
ARGV[3]  after: a user id (optional)
ARGV[4]  limit: 1..1000 (optional, default 1000)
Returns: {meeting, order, title, state, total, participants,
  {user, joined_at, ...}}.
Errors: BAD_REQUEST, NOT_FOUND (meeting or instance), NOT_JOINED (the
  `after` user left).
Flags: no-writes.
]]
local function attendance(keys, args)
  check_arity(args, 2, 4, 'meeting, order[, after[, limit]]')
  local tag = partition_tag(keys)
  local meeting = check_id(args[1], 'meeting')
  local order = check_id(args[2], 'order')
  expect_keys(keys, {
    key(tag, 'meeting', meeting), key(tag, 'schedule', meeting),
    key(tag, 'present', instance_name(meeting, order)),
  })
  local after = nil
  if args[3] and args[3] ~= '' then
    after = check_id(args[3], 'after')
  end
  local limit = check_limit(args[4])
  local record = meeting_record(keys[1], meeting)
  local inst = find_instance(keys[2], meeting, order)
  return {
    'meeting', meeting, 'order', order, 'title', record[4], 'state', inst.state,
    'total', redis.call('ZCARD', keys[3]),
    'participants', present_page(keys[3], inst, after, limit),
  }
end

redis.register_function {
  function_name = 'meet_attendance',
  callback = guard(attendance),
  flags = { 'no-writes' },
}
