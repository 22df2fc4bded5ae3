--[[
meet_end: end a running instance by hand. Every participant leaves with a
timeout event (at = now, or the scheduled end if that has passed, and
never before the instance's last event); chat and events are kept.

At most `budget` participants are timed out per call, so no call holds
Redis long: while `remaining` is above 0, call again (the instance is then
ended; a further call goes on timing out). If nobody calls again, the
scheduler's next tick finishes it (the instance stays in the due index).

What is due for the meeting is applied first (see meet_join): an END
after the instance's `to` finds it ended by that (timeouts at `to`) and
answers for it. Once the instance ended, a scheduled instance whose window
holds now and that wins the overlap rule starts (as the tick would start
it).

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  order id, or '' for the meeting's running instance
ARGV[2]  now (ms; optional, '' for Redis TIME)
ARGV[3]  budget: most participants to time out in this call, 1..1000
         (optional, default 1000)
ARGV[4]  retention (ms; optional; see meet_join)
Returns: {meeting, <id>, order, <id>, ended_at, <ms>, timed_out, {user...},
  remaining, <n>}.
Errors: BAD_REQUEST, NOT_FOUND (meeting or instance), INACTIVE (not
  running, and nobody left to time out).
]]
local function end_by_hand(keys, args)
  check_arity(args, 1, 4, 'order[, now[, budget[, retention]]]')
  local base, meeting = meeting_key(keys[1])
  optional_id(args[1], 'order')
  local now = clock(args[2])
  local budget = check_limit(args[3])
  local retention = check_retention(args[4])
  local f = redis.call('HMGET', keys[1], 'live', 'preempt')
  local done
  if not settled(f[1], f[2], now) then
    done = select(2, settle(base, meeting, f[1], f[2], now, budget, retention))
    budget = budget - done.timeouts
  end
  local order = args[1]
  if order == '' and done and done.ended[1] and not redis.call('HGET', keys[1], 'live') then
    -- by meeting: the instance over by the clock, which settle just ended
    order = string.match(done.ended[1], '/(%d+)$')
  end
  local inst = find_instance(base, meeting, order)
  local due_index = base .. 'due'
  local users, remaining
  if done and done.ended[1] == inst.name then
    users, remaining = done.users, redis.call('ZCARD', inst.present)
  elseif inst.state == 'active' then
    local at = now
    if later(at, inst.to) then
      at = inst.to
    end
    users, remaining = end_instance(inst, at, now, budget, retention, due_index, base .. 'active', 'ended')
    -- a window this instance held back may hold now
    settle(base, meeting, false, redis.call('HGET', keys[1], 'preempt'), now, budget, retention)
  elseif inst.state == 'ended' and redis.call('ZCARD', inst.present) > 0 then
    users, remaining = time_out(inst, ended_at(inst), now, budget, retention)
    if remaining == 0 then
      redis.call('ZREM', due_index, inst.name)
    end
  else
    fail('INACTIVE', 'instance ' .. inst.name .. ' is not active')
  end
  return {
    'meeting', meeting, 'order', inst.order, 'ended_at', ended_at(inst),
    'timed_out', users, 'remaining', remaining,
  }
end

redis.register_function('meet_end', end_by_hand)
