--[[
meet_leave: a user leaves an active instance.

KEYS[1]  meetingd:{p<P>}:schedule:<meeting>
KEYS[2]  meetingd:{p<P>}:present:<meeting>/<order>
KEYS[3]  meetingd:{p<P>}:events:<meeting>/<order>
ARGV[1]  meeting id
ARGV[2]  order id
ARGV[3]  user id
ARGV[4]  now (ms; optional)
ARGV[5]  retention (ms; optional; see meet_join)
Returns: {meeting, order, user, left_at, joined_at, id}.
Errors: BAD_REQUEST, NOT_FOUND (instance), INACTIVE, NOT_JOINED.
]]
local function leave(keys, args)
  check_arity(args, 3, 5, 'meeting, order, user[, now[, retention]]')
  local tag = partition_tag(keys)
  local meeting = check_id(args[1], 'meeting')
  local order = check_id(args[2], 'order')
  local name = instance_name(meeting, order)
  expect_keys(keys, {
    key(tag, 'schedule', meeting), key(tag, 'present', name), key(tag, 'events', name),
  })
  local user = check_id(args[3], 'user')
  local now = clock(args[4])
  local retention = check_retention(args[5])
  local inst = find_instance(keys[1], meeting, order)
  require_active(inst, now)
  local joined_at = redis.call('ZSCORE', keys[2], user)
  if not joined_at then
    fail('NOT_JOINED', 'user ' .. user .. ' is not in ' .. name)
  end
  local id = take_ids(keys[1], order, now, 1)[1]
  redis.call('XADD', keys[3], id, 'u', user, 't', 2, 'at', now)
  redis.call('ZREM', keys[2], user)
  keep_until(keys[3], inst, retention)
  return {
    'meeting', meeting, 'order', order, 'user', user, 'left_at', now,
    'joined_at', tonumber(joined_at), 'id', id,
  }
end

redis.register_function { function_name = 'meet_leave', callback = guard(leave) }
