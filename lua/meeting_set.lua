--[[
meet_meeting_set: create or update a meeting's title, description and
public flag. Its audience and instances are left as they are.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  meeting id
ARGV[2]  title        (not empty, no control characters)
ARGV[3]  description  (may be empty; tabs and newlines allowed)
ARGV[4]  public       (true or false)
Returns: {id, title, description, public} as field/value pairs.
Errors: BAD_REQUEST.
]]
local function meeting_set(keys, args)
  check_arity(args, 4, 4, 'meeting, title, description, public')
  local tag = partition_tag(keys)
  local meeting = check_id(args[1], 'meeting')
  expect_keys(keys, { key(tag, 'meeting', meeting) })
  local title = check_text(args[2], 'title')
  local description = check_text(args[3], 'description', true, true)
  local public = args[4]
  if public ~= 'true' and public ~= 'false' then
    fail('BAD_REQUEST', 'public must be true or false, got ' .. show(public))
  end
  redis.call('HSET', keys[1], 'title', title, 'description', description, 'public', public)
  return meeting_record(keys[1], meeting)
end

redis.register_function { function_name = 'meet_meeting_set', callback = guard(meeting_set) }
