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

-- A user's name, age, gender and e-mail from args[first..first+3], checked
-- and as stored (age without leading zeros, e-mail lower-cased). Shared
-- with meet_user_index, which queues these values for the archive.
local function check_user(args, first)
  local name = check_text(args[first], 'name')
  local age = args[first + 1]
  if not string.find(age, '^%d+$') or #age > 3 or tonumber(age) > 150 then
    fail('BAD_REQUEST', 'age must be 0..150, got ' .. show(age))
  end
  age = tostring(tonumber(age))
  local gender = check_text(args[first + 2], 'gender')
  return name, age, gender, check_email(args[first + 3])
end

local function user_set(keys, args)
  check_arity(args, 4, 4, 'name, age, gender, email')
  local user = user_key(keys[1])
  local name, age, gender, email = check_user(args, 1)
  redis.call('HSET', keys[1], 'name', name, 'age', age, 'gender', gender, 'email', email)
  return { 'id', user, 'name', name, 'age', age, 'gender', gender, 'email', email }
end

redis.register_function('meet_user_set', user_set)
