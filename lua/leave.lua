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
  local key, base, meeting, user, now, retention, leave_key =
    write_args(keys, args, 3, 'order, user[, now[, retention[, key]]]')
  local live = redis.call('HGET', key, 'live')
  if leave_key then
    local asked = optional_id(args[1], 'order') or ''
    live = live_settled(base, meeting, live, now, retention)
    local found, first = keyed_before(base, meeting, asked, live, user .. '/leave/' .. leave_key)
    if found then
      return found .. ' ' .. first .. ' duplicate'
    end
  end
  local order, to, _, id, prev, next_live, name = live_write(key, base, meeting, args[1], live, now, retention)
  if redis.call('ZREM', base .. 'present:' .. name, user) == 0 then
    fail('NOT_JOINED', 'user ' .. user .. ' is not in ' .. name)
  end
  redis.call('HSET', key, 'live', next_live)
  local events = base .. 'events:' .. name
  redis.call('XADD', events, id, 'u', user, 't', '2')
  redis.call('SPUBLISH', base .. 'watch:' .. name, prev .. ' ' .. id .. ' 2 ' .. user)
  if retention > 0 then
    keep_until(events, to, retention)
  end
  if leave_key then
    keep_key(base, name, user .. '/leave/' .. leave_key, id, to, retention)
  end
  return order .. ' ' .. id
end

redis.register_function('meet_leave', leave)
