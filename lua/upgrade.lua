--[[
meet_upgrade: bring one partition from the layouts of versions 0.1 and
0.2 to this one. The daemon calls it for every partition at start-up, a
page at a time, first for the running instances, then for the due index;
what is already upgraded is left alone, so calling it again changes
nothing.
  * running instances (0.1): a running instance's last id moves from its
    schedule entry (<O>#id) into its meeting's `live` field; (0.4.0) a
    meeting's `preempt` is copied into its live field (see instances.lua),
    where 0.4.0 kept it apart;
  * ARGV[3] 'upcoming' (0.2): every scheduled instance (all are in the due
    index) enters its meeting's upcoming index, and its meeting's
    `preempt` is set when it would pre-empt the running instance (see
    instances.lua). The cursor is "<score>:<offset>" in the due index: the
    entries from that due time on, after the first <offset> of them.

KEYS[1]  meetingd:{p<P>}:active
ARGV[1]  after: a meeting id, the `next` of the previous page (optional);
         with 'upcoming', a due-index cursor
ARGV[2]  limit: 1..1000 (optional, default 1000)
ARGV[3]  'upcoming' (optional): the second pass; 'down': the way back to
         0.4.0 instead, for a page of running instances (after and limit
         as for the first pass): each live field loses its copy of
         `preempt` (the field itself is kept in step), since 0.4.0 reads
         a live field of four parts only. Run it over every partition with
         every daemon stopped, then load 0.4.0's library
Returns: {upgraded, <n>, next, <meeting id, cursor or nil>}.
Errors: BAD_REQUEST.
]]

-- The second pass: a page of the due index from `cursor`.
local function upgrade_upcoming(base, cursor, limit)
  local score, offset = '-inf', 0
  if cursor and cursor ~= '' then
    local s, o = string.match(cursor, '^(%d+):(%d+)$')
    if not s then
      fail('BAD_REQUEST', 'after must be <due time>:<offset> with upcoming, got ' .. show(cursor))
    end
    score, offset = s, tonumber(o)
  end
  local page = redis.call('ZRANGE', base .. 'due', score, '+inf', 'BYSCORE', 'LIMIT', offset, limit,
    'WITHSCORES')
  local upgraded = 0
  for i = 1, #page, 2 do
    local meeting, order = string.match(page[i], '^(%d+)/(%d+)$')
    local inst = meeting and load_instance(base, meeting, order)
    if inst and inst.state == 'scheduled' then
      upgraded = upgraded + index_scheduled(inst)
    end
  end
  if #page < 2 * limit then
    return upgraded, false
  end
  local last = page[#page]
  if last == score then
    return upgraded, last .. ':' .. (offset + limit)
  end
  local at_last = 0
  for i = #page, 2, -2 do
    if page[i] ~= last then
      break
    end
    at_last = at_last + 1
  end
  return upgraded, last .. ':' .. at_last
end

local function upgrade(keys, args)
  check_arity(args, 0, 3, '[after[, limit[, upcoming]]]')
  local base = partition_key(keys[1], 'active')
  if args[3] == 'upcoming' then
    local upgraded, next_cursor = upgrade_upcoming(base, args[1], check_limit(args[2]))
    return { 'upgraded', upgraded, 'next', next_cursor }
  elseif args[3] == 'down' then
    local names, next_meeting = running_page(keys[1], args[1], args[2])
    local changed = 0
    for _, name in ipairs(names) do
      local key = base .. 'meeting:' .. string.match(name, '^(%d+)/')
      local o, to, ms, seq, preempt = parse_live(redis.call('HGET', key, 'live'))
      if preempt then
        redis.call('HSET', key, 'live', format_live(o, to, ms, seq))
        changed = changed + 1
      end
    end
    return { 'upgraded', changed, 'next', next_meeting }
  elseif args[3] and args[3] ~= '' then
    fail('BAD_REQUEST', "ARGV[3] must be 'upcoming', 'down' or left out, got " .. show(args[3]))
  end
  local names, next_meeting = running_page(keys[1], args[1], args[2])
  local upgraded = 0
  for _, name in ipairs(names) do
    local meeting, order = string.match(name, '^(%d+)/(%d+)$')
    local inst = meeting and load_instance(base, meeting, order)
    if inst and inst.state == 'active' then
      local f = redis.call('HMGET', inst.key, 'live', 'preempt')
      if not f[1] then
        local ms, seq = last_id(inst)
        redis.call('HDEL', inst.schedule, order .. '#id')
        redis.call('HSET', inst.key, 'live', format_live(order, inst.to, ms, seq, f[2]))
        upgraded = upgraded + 1
      elseif f[2] and select(5, parse_live(f[1])) ~= f[2] then
        redis.call('HSET', inst.key, 'live', with_preempt(f[1], f[2]))
        upgraded = upgraded + 1
      end
    end
  end
  return { 'upgraded', upgraded, 'next', next_meeting }
end

redis.register_function('meet_upgrade', upgrade)
