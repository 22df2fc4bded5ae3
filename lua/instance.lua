--[[
meet_instance: one instance with its meeting's details and how many are in
it (a row of ACTIVE).

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
KEYS[2]  meetingd:{p<P>}:schedule:<meeting>
KEYS[3]  meetingd:{p<P>}:present:<meeting>/<order>
ARGV[1]  meeting id
ARGV[2]  order id
Returns: {meeting, order, title, description, public, from, to, state,
  participants}.
Errors: BAD_REQUEST, NOT_FOUND (meeting or instance).
Flags: no-writes.
]]
local function instance(keys, args)
  check_arity(args, 2, 2, 'meeting, order')
  local tag = partition_tag(keys)
  local meeting = check_id(args[1], 'meeting')
  local order = check_id(args[2], 'order')
  expect_keys(keys, {
    key(tag, 'meeting', meeting), key(tag, 'schedule', meeting),
    key(tag, 'present', instance_name(meeting, order)),
  })
  local record = meeting_record(keys[1], meeting)
  local inst = find_instance(keys[2], meeting, order)
  return {
    'meeting', meeting, 'order', order, 'title', record[4], 'description', record[6],
    'public', record[8], 'from', inst.from, 'to', inst.to, 'state', inst.state,
    'participants', redis.call('ZCARD', keys[3]),
  }
end

redis.register_function {
  function_name = 'meet_instance',
  callback = guard(instance),
  flags = { 'no-writes' },
}
