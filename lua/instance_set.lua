--[[
meet_instance_set: create an instance of a meeting, or move its window.

A new or scheduled instance is (re)scheduled: the due index gets it at
`from`, and the scheduler activates it then. An active instance keeps
running with its new window (due again at its new `to`). An ended instance
cannot change.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
KEYS[2]  meetingd:{p<P>}:orders:<meeting>
KEYS[3]  meetingd:{p<P>}:schedule:<meeting>
KEYS[4]  meetingd:{p<P>}:due
ARGV[1]  meeting id
ARGV[2]  order id
ARGV[3]  from (ms since the epoch)
ARGV[4]  to   (ms since the epoch, after from)
Returns: {meeting, order, from, to, state}.
Errors: BAD_REQUEST (to <= from, an ended instance), NOT_FOUND (no such
  meeting).
]]
local function instance_set(keys, args)
  check_arity(args, 4, 4, 'meeting, order, from, to')
  local tag = partition_tag(keys)
  local meeting = check_id(args[1], 'meeting')
  local order = check_id(args[2], 'order')
  expect_keys(keys, {
    key(tag, 'meeting', meeting), key(tag, 'orders', meeting),
    key(tag, 'schedule', meeting), key(tag, 'due'),
  })
  local from = check_time(args[3], 'from')
  local to = check_time(args[4], 'to')
  if to <= from then
    fail('BAD_REQUEST', 'to must be after from')
  end
  meeting_record(keys[1], meeting)
  local inst = read_instance(keys[3], meeting, order)
  if inst and inst.state == 'ended' then
    fail('BAD_REQUEST', 'instance ' .. instance_name(meeting, order) .. ' has ended and cannot change')
  end
  inst = inst or { meeting = meeting, order = order, state = 'scheduled' }
  inst.from, inst.to = from, to
  write_instance(keys[3], inst)
  redis.call('ZADD', keys[2], order, order)
  if inst.state == 'active' then
    redis.call('ZADD', keys[4], to, instance_name(meeting, order))
  else
    redis.call('ZADD', keys[4], from, instance_name(meeting, order))
  end
  return { 'meeting', meeting, 'order', order, 'from', from, 'to', to, 'state', inst.state }
end

redis.register_function { function_name = 'meet_instance_set', callback = guard(instance_set) }
