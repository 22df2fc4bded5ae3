--[[
meet_user_get: read a user.

KEYS[1]  meetingd:{u<user>}:user
ARGV[1]  user id
Returns: {id, name, age, gender, email} as field/value pairs.
Errors: BAD_REQUEST, NOT_FOUND (no such user).
Flags: no-writes.
]]
local function user_get(keys, args)
  check_arity(args, 1, 1, 'user')
  local user = check_id(args[1], 'user')
  expect_keys(keys, { key('{u' .. user .. '}', 'user') })
  local u = redis.call('HMGET', keys[1], 'name', 'age', 'gender', 'email')
  if not u[1] then
    fail('NOT_FOUND', 'user ' .. user .. ' does not exist')
  end
  return { 'id', user, 'name', u[1], 'age', u[2], 'gender', u[3], 'email', u[4] }
end

redis.register_function {
  function_name = 'meet_user_get',
  callback = guard(user_get),
  flags = { 'no-writes' },
}
