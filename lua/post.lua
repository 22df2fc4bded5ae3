--[[
meet_post: a participant of a running instance posts a chat message. The
message goes to the instance's chat and, by id only, to the poster's own
index, so one user's messages are read without touching anybody else's.
What is due for the meeting is applied first (see meet_join), then the
key is looked up.

With a key (ARGV[6]), the post is made at most once: the same user's key
in the same instance stores nothing again and answers the first message's
id, marked "duplicate", for as long as the instance's history is kept. The
key is looked up before anything else is checked, so a retry answers the
same after the user left or the instance ended; by meeting alone (ARGV[1]
''), the instance is the one running, or else the one that ended last. A
key used again with another text is refused (BAD_REQUEST): a key names one
message. A client that did not hear back retries with the same key safely.

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
Errors: BAD_REQUEST (also a key repeated with another text), NOT_FOUND
  (meeting or instance), INACTIVE, NOT_JOINED.
]]
-- The first message a repeated key posted in the instance `order` names
-- ('' for the running one, or else the one that ended last), as the
-- reply; nil when the key is new. The same key with another text is
-- refused.
local function posted_before(base, meeting, order, live, user, post_key, text)
  local found, first = keyed_before(base, meeting, order, live, user .. ':' .. post_key)
  if not found then
    return nil
  end
  local name = instance_name(meeting, found)
  local stored = redis.call('XRANGE', base .. 'chat:' .. name, first, first)[1]
  if stored and stored[2][4] ~= text then
    fail('BAD_REQUEST', 'the key ' .. post_key .. ' of user ' .. user .. ' named message ' .. first
      .. ' in ' .. name .. ', with another text: a key names one message')
  end
  return found .. ' ' .. first .. ' duplicate'
end

local function post(keys, args)
  local key, base, meeting, user, now, retention, post_key =
    write_args(keys, args, 4, 'order, user, text[, now[, retention[, key]]]')
  local asked = args[1]
  if asked ~= '' then
    asked = check_id(asked, 'order')
  end
  local text = check_chat(args[3])
  local live = redis.call('HGET', key, 'live')
  if post_key then
    -- the key is looked up in the instance as it is once what is due is
    -- applied
    live = live_settled(base, meeting, live, now, retention)
    local duplicate = posted_before(base, meeting, asked, live, user, post_key, text)
    if duplicate then
      return duplicate
    end
  end
  local order, to, _, id, prev, next_live, name = live_write(key, base, meeting, asked, live, now, retention)
  if not redis.call('ZSCORE', base .. 'present:' .. name, user) then
    fail('NOT_JOINED', 'user ' .. user .. ' is not in ' .. name)
  end
  redis.call('HSET', key, 'live', next_live)
  local chat = base .. 'chat:' .. name
  local by = chat .. ':by:' .. user
  redis.call('XADD', chat, id, 'u', user, 'text', text)
  redis.call('SPUBLISH', base .. 'watch:' .. name, prev .. ' ' .. id .. ' m ' .. user .. ' ' .. text)
  redis.call('XADD', by, id, 'u', user)
  if retention > 0 then
    keep_until(chat, to, retention)
    keep_until(by, to, retention)
  end
  if post_key then
    keep_key(base, name, user .. ':' .. post_key, id, to, retention)
  end
  return order .. ' ' .. id
end

redis.register_function('meet_post', post)
