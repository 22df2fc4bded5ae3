--[[
meet_due: the first step of a tick: which instances of a partition have a
transition due at `now`, each with its meeting's active instance (whose
keys meet_tick needs, to end it when a higher order takes over).

KEYS[1]  meetingd:{p<P>}:due
KEYS[2]  meetingd:{p<P>}:active
ARGV[1]  now (ms; '' for Redis TIME)
ARGV[2]  limit: 1..1000 (optional, default 1000)
Returns: {{meeting, order, active order or ''}...}, earliest due first.
Errors: BAD_REQUEST.
Flags: no-writes.
]]
local function due(keys, args)
  check_arity(args, 1, 2, 'now[, limit]')
  local tag = partition_tag(keys)
  expect_keys(keys, { key(tag, 'due'), key(tag, 'active') })
  local now = clock(args[1])
  local limit = check_limit(args[2])
  local members = redis.call('ZRANGE', keys[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  local out = {}
  for _, member in ipairs(members) do
    local meeting, order = string.match(member, '^(%d+)/(%d+)$')
    if meeting then
      out[#out + 1] = { meeting, order, active_order(keys[2], meeting) or '' }
    end
  end
  return out
end

redis.register_function {
  function_name = 'meet_due',
  callback = guard(due),
  flags = { 'no-writes' },
}
