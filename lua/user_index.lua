--[[
meet_user_index: enter a user in its partition's user index, the list USERS
pages through, and queue the user for the archive. A user's hash is under
the user's own tag, so no call can write both: the daemon's USER SET calls
this first, then meet_user_set. A failure in between leaves an index entry
without a user, which listings skip and the next USER SET of that user
completes; never a user that no listing shows.

With the user's values (ARGV[2..5], checked as meet_user_set checks them),
and while the partition archives, the same call appends them to the
partition's outbox (k=user: u, name, age, gender, email, as
meet_user_set will store them), so the archive gets every USER SET that
was acknowledged with the values it wrote, whichever of the two calls runs
first for the archiver; rows are upserted by the entry's id, the newest
wins. Without them (the index backfill), only the index.

KEYS[1]  meetingd:{p<P>}:users, P = user mod PARTITIONS
ARGV[1]  user id
ARGV[2..5]  optional: name, age, gender, email (as meet_user_set's ARGV)
Returns: 1 when the user was added, 0 when it was there already.
Errors: BAD_REQUEST.
]]
local function user_index(keys, args)
  check_arity(args, 1, 5, 'user[, name, age, gender, email]')
  local base, p = partition_key(keys[1], 'users')
  local user = check_id(args[1], 'user')
  if not in_partition(user, p) then
    fail('BAD_REQUEST', 'user ' .. user .. ' belongs to meetingd:{p' .. (tonumber(user) % PARTITIONS)
      .. '}:users (' .. PARTITIONS .. ' partitions), not ' .. show(keys[1]))
  end
  local values
  if #args > 1 then
    check_arity(args, 5, 5, 'user, name, age, gender, email')
    values = { check_user(args, 2) }
  end
  local added = redis.call('ZADD', keys[1], user, user)
  if values then
    outbox_add(base, 'k', 'user', 'u', user, 'name', values[1], 'age', values[2],
      'gender', values[3], 'email', values[4])
  end
  return added
end

redis.register_function('meet_user_index', user_index)
