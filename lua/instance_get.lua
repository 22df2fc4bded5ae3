--[[
meet_instance_get: one instance's window, state and, once ended, when it
ended (what REPORT clips attendance to).

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  order id, or '' for the meeting's running instance (optional)
Returns: {meeting, <id>, order, <id>, from, <ms>, to, <ms>, state,
  <scheduled|active|ended>, ended_at, <ms> or nil}.
Errors: BAD_REQUEST, NOT_FOUND (meeting or instance), INACTIVE ('' and
  none runs).
Flags: no-writes.
]]
local function instance_get(keys, args)
  check_arity(args, 0, 1, '[order]')
  local base, meeting = meeting_key(keys[1])
  local order = args[1] or ''
  optional_id(order, 'order')
  local inst = find_instance(base, meeting, order)
  local ended = false
  if inst.state == 'ended' then
    ended = ended_at(inst)
  end
  return {
    'meeting', meeting, 'order', inst.order, 'from', inst.from, 'to', inst.to,
    'state', inst.state, 'ended_at', ended,
  }
end

redis.register_function {
  function_name = 'meet_instance_get',
  callback = instance_get,
  flags = { 'no-writes' },
}
