--[[
meet_meetings: a row per meeting of one partition, for MEETINGS: its title,
whether it is public, how many instances it has and which one runs. Ids
without a meeting are left out.

KEYS[1]  meetingd:{p<P>}:meetings
ARGV     meeting ids of partition P (1..1000 of them)
Returns: {rows, {{id, title, public, instances, running}...}} in the order
  given; `running` is the order of the running instance, or nil.
Errors: BAD_REQUEST.
Flags: no-writes.
]]
local function meetings(keys, args)
  check_arity(args, 1, PAGE_MAX, 'meeting...')
  local base, p = partition_key(keys[1], 'meetings')
  for _, meeting in ipairs(args) do
    check_id(meeting, 'meeting')
    if not in_partition(meeting, p) then
      fail('BAD_REQUEST', 'meeting ' .. meeting .. ' is not of partition ' .. p .. ' ('
        .. PARTITIONS .. ' partitions)')
    end
  end
  local rows = {}
  for _, meeting in ipairs(args) do
    local m = redis.call('HMGET', base .. 'meeting:' .. meeting, 'title', 'public', 'live')
    if m[1] then
      rows[#rows + 1] = {
        meeting, m[1], m[2] or 'false', redis.call('ZCARD', base .. 'orders:' .. meeting),
        parse_live(m[3]) or false,
      }
    end
  end
  return { 'rows', rows }
end

redis.register_function {
  function_name = 'meet_meetings',
  callback = meetings,
  flags = { 'no-writes' },
}
