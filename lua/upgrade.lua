--[[
meet_upgrade: bring one partition's running instances from the layout of
version 0.1 to this one: a running instance's last id moves from its
schedule entry (<O>#id) into its meeting's `live` field. The daemon calls
it for every partition at start-up, a page at a time; an instance already
upgraded is left alone, so calling it again changes nothing.

KEYS[1]  meetingd:{p<P>}:active
ARGV[1]  after: a meeting id, the `next` of the previous page (optional)
ARGV[2]  limit: 1..1000 (optional, default 1000)
Returns: {upgraded, <n>, next, <meeting id or nil>}.
Errors: BAD_REQUEST.
]]
local function upgrade(keys, args)
  check_arity(args, 0, 2, '[after[, limit]]')
  local base = partition_key(keys[1], 'active')
  local names, next_meeting = running_page(keys[1], args[1], args[2])
  local upgraded = 0
  for _, name in ipairs(names) do
    local meeting, order = string.match(name, '^(%d+)/(%d+)$')
    local inst = meeting and load_instance(base, meeting, order)
    if inst and inst.state == 'active' and not redis.call('HGET', inst.key, 'live') then
      local ms, seq = last_id(inst)
      redis.call('HDEL', inst.schedule, order .. '#id')
      redis.call('HSET', inst.key, 'live', format_live(order, inst.to, ms, seq))
      upgraded = upgraded + 1
    end
  end
  return { 'upgraded', upgraded, 'next', next_meeting }
end

redis.register_function('meet_upgrade', upgrade)
