--[[
meet_current: which instance of a meeting is running (how `M` alone is
resolved to `M/O`, for WATCH), by the clock: the instance whose window
holds `now` and that wins the overlap rule, whether or not a call or the
tick has started it yet (see instances.lua); none once `to` has passed.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  now (ms; optional, Redis TIME when left out or '')
Returns: the running instance's order id.
Errors: BAD_REQUEST, NOT_FOUND (no such meeting), INACTIVE (none runs).
Flags: no-writes.
]]
local function current(keys, args)
  check_arity(args, 0, 1, '[now]')
  local base, meeting = meeting_key(keys[1])
  local now = clock(args[1])
  return find_by_clock(base, meeting, '', now).order
end

redis.register_function {
  function_name = 'meet_current',
  callback = current,
  flags = { 'no-writes' },
}
