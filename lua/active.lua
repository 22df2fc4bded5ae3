--[[
meet_active: the running instances of one partition, by meeting id, with
their meetings' details and head counts, a page at a time. ACTIVE asks
every partition.

KEYS[1]  meetingd:{p<P>}:active
ARGV[1]  after: a meeting id, the `next` of the previous page (optional)
ARGV[2]  limit: instances, 1..1000 (optional, default 1000)
Returns: {next, <meeting id or nil>, rows, {{meeting, order, title,
  description, public, from, to, participants}...}}.
Errors: BAD_REQUEST.
Flags: no-writes.
]]
local function active(keys, args)
  check_arity(args, 0, 2, '[after[, limit]]')
  local base = partition_key(keys[1], 'active')
  local names, next_meeting = running_page(keys[1], args[1], args[2])
  local rows = {}
  for _, name in ipairs(names) do
    local meeting, order = string.match(name, '^(%d+)/(%d+)$')
    local inst = meeting and load_instance(base, meeting, order)
    if inst then
      local m = redis.call('HMGET', inst.key, 'title', 'description', 'public')
      rows[#rows + 1] = {
        meeting, order, m[1] or '', m[2] or '', m[3] or 'false', inst.from, inst.to,
        redis.call('ZCARD', inst.present),
      }
    end
  end
  return { 'next', next_meeting, 'rows', rows }
end

redis.register_function {
  function_name = 'meet_active',
  callback = active,
  flags = { 'no-writes' },
}
