--[[
meet_post: a participant of an active instance posts a chat message. The
message goes to the instance's chat and, by id only, to the poster's own
index, so one user's messages are read without touching anybody else's.

KEYS[1]  meetingd:{p<P>}:schedule:<meeting>
KEYS[2]  meetingd:{p<P>}:present:<meeting>/<order>
KEYS[3]  meetingd:{p<P>}:chat:<meeting>/<order>
KEYS[4]  meetingd:{p<P>}:chat:<meeting>/<order>:by:<user>
ARGV[1]  meeting id
ARGV[2]  order id
ARGV[3]  user id
ARGV[4]  text (not empty, at most 64 KiB; the daemon's limit is lower)
ARGV[5]  now (ms; optional)
ARGV[6]  retention (ms; optional): the chat and the poster's index expire
         this long after the instance's scheduled end; 0: kept for ever
Returns: {id, meeting, order, user, at}.
Errors: BAD_REQUEST, NOT_FOUND (instance), INACTIVE, NOT_JOINED.
]]
local function post(keys, args)
  check_arity(args, 4, 6, 'meeting, order, user, text[, now[, retention]]')
  local tag = partition_tag(keys)
  local meeting = check_id(args[1], 'meeting')
  local order = check_id(args[2], 'order')
  local user = check_id(args[3], 'user')
  local name = instance_name(meeting, order)
  expect_keys(keys, {
    key(tag, 'schedule', meeting), key(tag, 'present', name),
    key(tag, 'chat', name), key(tag, 'chat', name, 'by', user),
  })
  local text = args[4]
  if text == '' then
    fail('BAD_REQUEST', 'text must not be empty')
  end
  if #text > TEXT_MAX then
    fail('BAD_REQUEST', 'text is longer than ' .. TEXT_MAX .. ' bytes')
  end
  local now = clock(args[5])
  local retention = check_retention(args[6])
  local inst = find_instance(keys[1], meeting, order)
  require_active(inst, now)
  if not redis.call('ZSCORE', keys[2], user) then
    fail('NOT_JOINED', 'user ' .. user .. ' is not in ' .. name)
  end
  local id = take_ids(keys[1], order, now, 1)[1]
  redis.call('XADD', keys[3], id, 'u', user, 'text', text, 'at', now)
  redis.call('XADD', keys[4], id, 'at', now)
  keep_until(keys[3], inst, retention)
  keep_until(keys[4], inst, retention)
  return { 'id', id, 'meeting', meeting, 'order', order, 'user', user, 'at', now }
end

redis.register_function { function_name = 'meet_post', callback = guard(post) }
