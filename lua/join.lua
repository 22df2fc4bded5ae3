--[[
meet_join: a user joins a running instance. The hottest call of the
library: one HMGET reads the meeting's public flag and its live field
(its running instance, the instance's last id and its `preempt`), and only
what changes is written. What the clock says is due for the meeting (its
instance is over, or a window opened) is applied first (`settle`, see
instances.lua): a JOIN in a window that opened after the last tick starts
its instance and joins it.

The user's e-mail is passed in by the caller (users live under their own
hash tag, so this call cannot read them); it decides admission to a
private meeting and is not looked at for a public one.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  order id, or '' for the meeting's running instance
ARGV[2]  user id
ARGV[3]  the user's e-mail ('' for a public meeting)
ARGV[4]  now (ms; optional, Redis TIME when left out or '')
ARGV[5]  retention (ms; optional): the event log expires this long after
         the instance's scheduled end; 0 or left out: kept for ever
ARGV[6]  key (optional): 1-64 bytes of A-Za-z0-9._:-. The join is made at
         most once: the same user's key in the same instance writes
         nothing again and answers the first join, marked "duplicate",
         looked up before anything else is checked (as meet_post's)
Returns: "<order> <id>": the instance joined and the join event's id,
  whose first part is the join time (ms); "<order> <id> duplicate" for a
  repeated key.
Errors: BAD_REQUEST, NOT_FOUND (meeting or instance), INACTIVE,
  NOT_ALLOWED (private, e-mail not in the audience), ALREADY_JOINED.
]]
-- Let `email` into a private meeting, or refuse. The audience holds only
-- checked, lower-cased e-mails, so one found as given needs no check; the
-- check (and lower-casing) is done when it is not found.
local function admit(audience, email, user, meeting)
  if email and email ~= '' and redis.call('ZSCORE', audience, email) then
    return
  end
  local lowered = check_email(email)
  if lowered == email or not redis.call('ZSCORE', audience, lowered) then
    fail('NOT_ALLOWED', 'user ' .. user .. ' is not in the audience of meeting ' .. meeting)
  end
end

local function join(keys, args)
  local key, base, meeting, user, now, retention, join_key =
    write_args(keys, args, 4, 'order, user, email[, now[, retention[, key]]]')
  local meeting_fields = redis.call('HMGET', key, 'public', 'live')
  local live = meeting_fields[2]
  if join_key then
    local asked = optional_id(args[1], 'order') or ''
    live = live_settled(base, meeting, live, now, retention)
    local found, first = keyed_before(base, meeting, asked, live, user .. '/join/' .. join_key)
    if found then
      return found .. ' ' .. first .. ' duplicate'
    end
  end
  local order, to, at, id, prev, next_live, name = live_write(key, base, meeting, args[1], live, now, retention)
  if meeting_fields[1] ~= 'true' then
    admit(base .. 'audience:' .. meeting, args[3], user, meeting)
  end
  -- NX: a user already in writes nothing
  if redis.call('ZADD', base .. 'present:' .. name, 'NX', at, user) == 0 then
    fail('ALREADY_JOINED', 'user ' .. user .. ' is already in ' .. name)
  end
  redis.call('HSET', key, 'live', next_live)
  local events = base .. 'events:' .. name
  redis.call('XADD', events, id, 'u', user, 't', '1')
  redis.call('SPUBLISH', base .. 'watch:' .. name, prev .. ' ' .. id .. ' 1 ' .. user)
  if retention > 0 then
    keep_until(events, to, retention)
  end
  if join_key then
    keep_key(base, name, user .. '/join/' .. join_key, id, to, retention)
  end
  return order .. ' ' .. id
end

redis.register_function('meet_join', join)
