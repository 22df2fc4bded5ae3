--[[
meet_post: a participant of a running instance posts a chat message. The
message goes to the instance's chat and, by id only, to the poster's own
index, so one user's messages are read without touching anybody else's.

With a key (ARGV[6]), the post is made at most once: the same user's key
in the same instance stores nothing again and answers the first message's
id, marked "duplicate", for as long as the instance's history is kept. A
client that did not hear back retries with the same key safely.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  order id, or '' for the meeting's running instance
ARGV[2]  user id
ARGV[3]  text (not empty, at most 64 KiB; the daemon's limit is lower; no
         control characters but tab and newline)
ARGV[4]  now (ms; optional)
ARGV[5]  retention (ms; optional): the chat, the poster's index and the
         keys expire this long after the instance's scheduled end
ARGV[6]  key (optional): 1-64 bytes of A-Za-z0-9._:-
Returns: "<order> <id>", or "<order> <id> duplicate" for a repeated key;
  the id's first part is the message's time (ms).
Errors: BAD_REQUEST, NOT_FOUND (meeting or instance), INACTIVE, NOT_JOINED.
]]
local function post(keys, args)
  check_arity(args, 3, 6, 'order, user, text[, now[, retention[, key]]]')
  local key = keys[1]
  local base, meeting = meeting_key(key)
  local user = check_id(args[2], 'user')
  local text = check_chat(args[3])
  local now = clock(args[4])
  local retention = check_retention(args[5])
  local post_key = check_post_key(args[6])
  local order, to, ms, seq = running(key, base, meeting, args[1], redis.call('HGET', key, 'live'), now)
  local name = instance_name(meeting, order)
  if not redis.call('ZSCORE', base .. 'present:' .. name, user) then
    fail('NOT_JOINED', 'user ' .. user .. ' is not in ' .. name)
  end
  local posted
  if post_key then
    posted = base .. 'posted:' .. name
    local first = redis.call('HGET', posted, user .. ':' .. post_key)
    if first then
      return order .. ' ' .. first .. ' duplicate'
    end
  end
  ms, seq = next_id(now, ms, seq)
  local id = ms .. '-' .. seq
  redis.call('HSET', key, 'live', format_live(order, to, ms, seq))
  local chat = base .. 'chat:' .. name
  local by = chat .. ':by:' .. user
  redis.call('XADD', chat, id, 'u', user, 'text', text)
  redis.call('XADD', by, id, 'u', user)
  keep_until(chat, to, retention)
  keep_until(by, to, retention)
  if posted then
    redis.call('HSET', posted, user .. ':' .. post_key, id)
    keep_until(posted, to, retention)
  end
  return order .. ' ' .. id
end

redis.register_function('meet_post', post)
