--[[
meet_meeting_set: create or update a meeting's title, description and
public flag. Its audience and instances are left as they are. The meeting
is entered in its partition's index (meetingd:{p<P>}:meetings, MEETINGS).

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  title        (not empty, no control characters)
ARGV[2]  description  (may be empty; tabs and newlines allowed)
ARGV[3]  public       (true or false)
Returns: {id, <id>, title, <s>, description, <s>, public, <true/false>}.
Errors: BAD_REQUEST.
]]
local function meeting_set(keys, args)
  check_arity(args, 3, 3, 'title, description, public')
  local base, meeting = meeting_key(keys[1])
  local title = check_text(args[1], 'title')
  local description = check_text(args[2], 'description', true, true)
  local public = args[3]
  if public ~= 'true' and public ~= 'false' then
    fail('BAD_REQUEST', 'public must be true or false, got ' .. show(public))
  end
  redis.call('HSET', keys[1], 'title', title, 'description', description, 'public', public)
  redis.call('ZADD', base .. 'meetings', meeting, meeting)
  outbox_add(base, 'k', 'meeting', 'm', meeting, 'title', title, 'description', description, 'public', public)
  return { 'id', meeting, 'title', title, 'description', description, 'public', public }
end

redis.register_function('meet_meeting_set', meeting_set)
