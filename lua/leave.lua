--[[
meet_leave: a user leaves a running instance.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  order id, or '' for the meeting's running instance
ARGV[2]  user id
ARGV[3]  now (ms; optional)
ARGV[4]  retention (ms; optional; see meet_join)
Returns: "<order> <id>": the leave event's id, whose first part is the
  time the user left (ms).
Errors: BAD_REQUEST, NOT_FOUND (meeting or instance), INACTIVE, NOT_JOINED.
]]
local function leave(keys, args)
  check_arity(args, 2, 4, 'order, user[, now[, retention]]')
  local key = keys[1]
  local base, meeting = meeting_key(key)
  local user = check_id(args[2], 'user')
  local now = clock(args[3])
  local retention = check_retention(args[4])
  local order, to, ms, seq = running(key, base, meeting, args[1], redis.call('HGET', key, 'live'), now)
  local name = instance_name(meeting, order)
  if redis.call('ZREM', base .. 'present:' .. name, user) == 0 then
    fail('NOT_JOINED', 'user ' .. user .. ' is not in ' .. name)
  end
  local prev = prev_id(ms, seq)
  ms, seq = next_id(now, ms, seq)
  redis.call('HSET', key, 'live', format_live(order, to, ms, seq))
  local events = base .. 'events:' .. name
  local id = redis.call('XADD', events, ms .. '-' .. seq, 'u', user, 't', '2')
  announce(base, name, prev, id, '2', user)
  keep_until(events, to, retention)
  return order .. ' ' .. id
end

redis.register_function('meet_leave', leave)
