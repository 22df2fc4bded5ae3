--[[
meet_join: a user joins an active instance.

The user's e-mail is passed in by the caller (users live under their own
hash tag, so this call cannot read them): it decides admission to a private
meeting.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
KEYS[2]  meetingd:{p<P>}:audience:<meeting>
KEYS[3]  meetingd:{p<P>}:schedule:<meeting>
KEYS[4]  meetingd:{p<P>}:present:<meeting>/<order>
KEYS[5]  meetingd:{p<P>}:events:<meeting>/<order>
ARGV[1]  meeting id
ARGV[2]  order id
ARGV[3]  user id
ARGV[4]  the user's e-mail
ARGV[5]  now (ms; optional, Redis TIME when left out or '')
ARGV[6]  retention (ms; optional): the event log expires this long after
         the instance's scheduled end; 0 or left out: kept for ever
Returns: {meeting, order, user, joined_at, id} (id: the join event's).
Errors: BAD_REQUEST, NOT_FOUND (meeting or instance), INACTIVE,
  NOT_ALLOWED (private, e-mail not in the audience), ALREADY_JOINED.
]]
local function join(keys, args)
  check_arity(args, 4, 6, 'meeting, order, user, email[, now[, retention]]')
  local tag = partition_tag(keys)
  local meeting = check_id(args[1], 'meeting')
  local order = check_id(args[2], 'order')
  local name = instance_name(meeting, order)
  expect_keys(keys, {
    key(tag, 'meeting', meeting), key(tag, 'audience', meeting), key(tag, 'schedule', meeting),
    key(tag, 'present', name), key(tag, 'events', name),
  })
  local user = check_id(args[3], 'user')
  local email = check_email(args[4])
  local now = clock(args[5])
  local retention = check_retention(args[6])
  local record = meeting_record(keys[1], meeting)
  local inst = find_instance(keys[3], meeting, order)
  require_active(inst, now)
  if record[8] ~= 'true' and not redis.call('ZSCORE', keys[2], email) then
    fail('NOT_ALLOWED', 'user ' .. user .. ' is not in the audience of meeting ' .. meeting)
  end
  if redis.call('ZSCORE', keys[4], user) then
    fail('ALREADY_JOINED', 'user ' .. user .. ' is already in ' .. name)
  end
  local id = take_ids(keys[3], order, now, 1)[1]
  redis.call('XADD', keys[5], id, 'u', user, 't', 1, 'at', now)
  redis.call('ZADD', keys[4], now, user)
  keep_until(keys[5], inst, retention)
  return { 'meeting', meeting, 'order', order, 'user', user, 'joined_at', now, 'id', id }
end

redis.register_function { function_name = 'meet_join', callback = guard(join) }
