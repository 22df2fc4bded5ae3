--[[
meet_current: which instance of a meeting is running (how `M` alone is
resolved to `M/O`, for WATCH).

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
Returns: the running instance's order id.
Errors: BAD_REQUEST, NOT_FOUND (no such meeting), INACTIVE (none runs).
Flags: no-writes.
]]
local function current(keys, args)
  check_arity(args, 0, 0, 'nothing')
  local base, meeting = meeting_key(keys[1])
  return find_instance(base, meeting, '').order
end

redis.register_function {
  function_name = 'meet_current',
  callback = current,
  flags = { 'no-writes' },
}
