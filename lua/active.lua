--[[
meet_active: the active instances of one partition, by meeting id, a page
at a time. ACTIVE asks every partition, then each instance (meet_instance).

KEYS[1]  meetingd:{p<P>}:active
ARGV[1]  after: a meeting id, the last of the previous page (optional)
ARGV[2]  limit: 1..1000 (optional, default 1000)
Returns: {"M/O", ...}.
Errors: BAD_REQUEST.
Flags: no-writes.
]]
local function active(keys, args)
  check_arity(args, 0, 2, '[after[, limit]]')
  local tag = partition_tag(keys)
  expect_keys(keys, { key(tag, 'active') })
  local min = '-inf'
  if args[1] and args[1] ~= '' then
    min = '(' .. check_id(args[1], 'after')
  end
  local limit = check_limit(args[2])
  return redis.call('ZRANGE', keys[1], min, '+inf', 'BYSCORE', 'LIMIT', 0, limit)
end

redis.register_function {
  function_name = 'meet_active',
  callback = guard(active),
  flags = { 'no-writes' },
}
