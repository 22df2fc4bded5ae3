--[[
meet_user_set: create or update a user.

KEYS[1]  meetingd:{u<user>}:user      the user's hash
ARGV[1]  name    (not empty, no control characters)
ARGV[2]  age     (0..150)
ARGV[3]  gender  (not empty, no control characters)
ARGV[4]  email   (name@domain; stored lower-cased)
Returns: the user, {id, <id>, name, <s>, age, <n>, gender, <s>, email, <s>}.
Errors: BAD_REQUEST.
]]
local function user_set(keys, args)
  check_arity(args, 4, 4, 'name, age, gender, email')
  local user = user_key(keys[1])
  local name = check_text(args[1], 'name')
  if not string.find(args[2], '^%d+$') or #args[2] > 3 or tonumber(args[2]) > 150 then
    fail('BAD_REQUEST', 'age must be 0..150, got ' .. show(args[2]))
  end
  local age = tostring(tonumber(args[2]))
  local gender = check_text(args[3], 'gender')
  local email = check_email(args[4])
  redis.call('HSET', keys[1], 'name', name, 'age', age, 'gender', gender, 'email', email)
  return { 'id', user, 'name', name, 'age', age, 'gender', gender, 'email', email }
end

redis.register_function('meet_user_set', user_set)
