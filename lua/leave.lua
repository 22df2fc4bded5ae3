--[[
meet_leave: a user leaves a running instance. What is due for the meeting
is applied first (see meet_join): a LEAVE after the instance's `to` ends
it (the user times out, at `to`) and is refused (INACTIVE).

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  order id, or '' for the meeting's running instance
ARGV[2]  user id
ARGV[3]  now (ms; optional)
ARGV[4]  retention (ms; optional; see meet_join)
ARGV[5]  key (optional): as meet_join's, for the leave
Returns: "<order> <id>": the leave event's id, whose first part is the
  time the user left (ms); "<order> <id> duplicate" for a repeated key.
Errors: BAD_REQUEST, NOT_FOUND (meeting or instance), INACTIVE, NOT_JOINED.
]]
local function leave(keys, args)
  check_arity(args, 2, 5, 'order, user[, now[, retention[, key]]]')
  local key = keys[1]
  local base, meeting = meeting_key(key)
  local user = check_id(args[2], 'user')
  local now = clock(args[3])
  local retention = check_retention(args[4])
  local leave_key = check_post_key(args[5])
  local fields = redis.call('HMGET', key, 'live', 'preempt')
  if leave_key then
    local asked = optional_id(args[1], 'order') or ''
    if not settled(fields[1], fields[2], now) then
      fields[1] = settle(base, meeting, fields[1], fields[2], now, SETTLE_BUDGET, retention)
      fields[2] = false
    end
    local found, first = keyed_before(base, meeting, asked, fields[1], user .. '/leave/' .. leave_key)
    if found then
      return found .. ' ' .. first .. ' duplicate'
    end
  end
  local order, to, ms, seq = running_now(key, base, meeting, args[1], fields[1], fields[2], now, retention)
  local name = instance_name(meeting, order)
  if redis.call('ZREM', base .. 'present:' .. name, user) == 0 then
    fail('NOT_JOINED', 'user ' .. user .. ' is not in ' .. name)
  end
  local _, id, prev, live = next_live_id(key, order, to, ms, seq, now)
  redis.call('HSET', key, 'live', live)
  local events = base .. 'events:' .. name
  redis.call('XADD', events, id, 'u', user, 't', '2')
  announce(base, name, prev, id, '2', user)
  keep_until(events, to, retention)
  if leave_key then
    keep_key(base, name, user .. '/leave/' .. leave_key, id, to, retention)
  end
  return order .. ' ' .. id
end

redis.register_function('meet_leave', leave)
