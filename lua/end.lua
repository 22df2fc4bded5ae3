--[[
meet_end: end an active instance by hand. Every participant leaves with a
timeout event (at = now, or the scheduled end if that has passed); chat and events are kept.

At most `budget` participants are timed out per call, so no call holds
Redis long: while `remaining` is above 0, call again (the instance is then
ended; a further call goes on timing out). If nobody calls again, the
scheduler's next tick finishes it (the instance stays in the due index).

KEYS[1]  meetingd:{p<P>}:schedule:<meeting>
KEYS[2]  meetingd:{p<P>}:present:<meeting>/<order>
KEYS[3]  meetingd:{p<P>}:events:<meeting>/<order>
KEYS[4]  meetingd:{p<P>}:due
KEYS[5]  meetingd:{p<P>}:active
ARGV[1]  meeting id
ARGV[2]  order id
ARGV[3]  now (ms; optional, '' for Redis TIME)
ARGV[4]  budget: most participants to time out in this call, 1..1000
         (optional, default 1000)
ARGV[5]  retention (ms; optional; see meet_join)
Returns: {meeting, order, ended_at, timed_out, {user...}, remaining, n}.
Errors: BAD_REQUEST, NOT_FOUND (instance), INACTIVE (not active, and
  nobody left to time out).
]]
local function end_by_hand(keys, args)
  check_arity(args, 2, 5, 'meeting, order[, now[, budget[, retention]]]')
  local tag = partition_tag(keys)
  local meeting = check_id(args[1], 'meeting')
  local order = check_id(args[2], 'order')
  local name = instance_name(meeting, order)
  expect_keys(keys, {
    key(tag, 'schedule', meeting), key(tag, 'present', name), key(tag, 'events', name),
    key(tag, 'due'), key(tag, 'active'),
  })
  local now = clock(args[3])
  local budget = check_limit(args[4])
  local retention = check_retention(args[5])
  local inst = find_instance(keys[1], meeting, order)
  local users, remaining
  if inst.state == 'active' then
    users, remaining = end_instance(keys[1], keys[2], keys[3], keys[4], keys[5], inst,
      math.min(now, inst.to), now, budget, retention)
  elseif inst.state == 'ended' and redis.call('ZCARD', keys[2]) > 0 then
    users, remaining = time_out(keys[1], keys[2], keys[3], inst, ended_at(keys[1], inst), now, budget,
      retention)
    if remaining == 0 then
      redis.call('ZREM', keys[4], name)
    end
  else
    fail('INACTIVE', 'instance ' .. name .. ' is not active')
  end
  return {
    'meeting', meeting, 'order', order, 'ended_at', ended_at(keys[1], inst),
    'timed_out', users, 'remaining', remaining,
  }
end

redis.register_function { function_name = 'meet_end', callback = guard(end_by_hand) }
