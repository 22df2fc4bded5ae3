--[[
meet_user_index: enter a user in its partition's user index, the list USERS
pages through. A user's hash is under the user's own tag, so no call can
write both: the daemon's USER SET calls this first, then meet_user_set. A
failure in between leaves an index entry without a user, which listings
skip and the next USER SET of that user completes; never a user that no
listing shows.

KEYS[1]  meetingd:{p<P>}:users, P = user mod PARTITIONS
ARGV[1]  user id
Returns: 1 when the user was added, 0 when it was there already.
Errors: BAD_REQUEST.
]]
local function user_index(keys, args)
  check_arity(args, 1, 1, 'user')
  local _, p = partition_key(keys[1], 'users')
  local user = check_id(args[1], 'user')
  if not in_partition(user, p) then
    fail('BAD_REQUEST', 'user ' .. user .. ' belongs to meetingd:{p' .. (tonumber(user) % PARTITIONS)
      .. '}:users (' .. PARTITIONS .. ' partitions), not ' .. show(keys[1]))
  end
  return redis.call('ZADD', keys[1], user, user)
end

redis.register_function('meet_user_index', user_index)
