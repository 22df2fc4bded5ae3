--[[
meet_user_set: create or update a user.

KEYS[1]  meetingd:{u<user>}:user      the user's hash
ARGV[1]  user id
ARGV[2]  name    (not empty, no control characters)
ARGV[3]  age     (0..150)
ARGV[4]  gender  (not empty, no control characters)
ARGV[5]  email   (name@domain; stored lower-cased)
Returns: the user, {id, name, age, gender, email} as field/value pairs.
Errors: BAD_REQUEST.
]]
local function user_set(keys, args)
  check_arity(args, 5, 5, 'user, name, age, gender, email')
  local user = check_id(args[1], 'user')
  local tag = '{u' .. user .. '}'
  expect_keys(keys, { key(tag, 'user') })
  local name = check_text(args[2], 'name')
  if not string.match(args[3], '^%d+$') or #args[3] > 3 or tonumber(args[3]) > 150 then
    fail('BAD_REQUEST', 'age must be 0..150, got ' .. show(args[3]))
  end
  local age = tostring(tonumber(args[3]))
  local gender = check_text(args[4], 'gender')
  local email = check_email(args[5])
  redis.call('HSET', keys[1], 'name', name, 'age', age, 'gender', gender, 'email', email)
  return { 'id', user, 'name', name, 'age', age, 'gender', gender, 'email', email }
end

redis.register_function { function_name = 'meet_user_set', callback = guard(user_set) }
