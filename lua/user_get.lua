--[[
meet_user_get: read a user.

KEYS[1]  meetingd:{u<user>}:user
Returns: {id, <id>, name, <s>, age, <n>, gender, <s>, email, <s>}.
Errors: BAD_REQUEST, NOT_FOUND (no such user).
Flags: no-writes.
]]
local function user_get(keys, args)
  check_arity(args, 0, 0, 'nothing')
  local user = user_key(keys[1])
  local u = redis.call('HMGET', keys[1], 'name', 'age', 'gender', 'email')
  if not u[1] then
    fail('NOT_FOUND', 'user ' .. user .. ' does not exist')
  end
  return { 'id', user, 'name', u[1], 'age', u[2], 'gender', u[3], 'email', u[4] }
end

redis.register_function {
  function_name = 'meet_user_get',
  callback = user_get,
  flags = { 'no-writes' },
}
