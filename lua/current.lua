--[[
meet_current: which instance of a meeting is active (how `M` alone is
resolved to `M/O`).

KEYS[1]  meetingd:{p<P>}:active
KEYS[2]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  meeting id
Returns: the active order id.
Errors: BAD_REQUEST, NOT_FOUND (no such meeting), INACTIVE (none active).
Flags: no-writes.
]]
local function current(keys, args)
  check_arity(args, 1, 1, 'meeting')
  local tag = partition_tag(keys)
  local meeting = check_id(args[1], 'meeting')
  expect_keys(keys, { key(tag, 'active'), key(tag, 'meeting', meeting) })
  meeting_record(keys[2], meeting)
  local order = active_order(keys[1], meeting)
  if not order then
    fail('INACTIVE', 'meeting ' .. meeting .. ' has no active instance')
  end
  return order
end

redis.register_function {
  function_name = 'meet_current',
  callback = guard(current),
  flags = { 'no-writes' },
}
