--[[
meet_tick: one step of a tick in one partition: apply the transitions due
at `now` of at most `batch` instances, the earliest due first, and say
whether more are due. The daemon calls it until nothing is.

Everything is read and written inside this one atomic call, so two ticks
at once (two daemons, or a TICK during the cron's) never apply a
transition twice: the second finds it done.

For each instance due, by its state:
  * active and to <= now: ended; participants time out (at = to).
  * scheduled and to <= now: its whole window passed while nothing ran:
    ended without events (reported as missed).
  * scheduled and from <= now < to: its meeting is settled (`settle` in
    instances.lua, the function a JOIN, LEAVE, POST or END applies too):
    the highest order whose window holds now starts, unless the meeting's
    running instance is of a higher order and not over; a loser is due
    again when the winner ends (or at its own end, if sooner). Starting
    ends the meeting's other running instance (timeouts at now).
  * ended with participants left (a drain cut short by the budget): more
    of them time out.
At most `budget` participants time out per call; the rest stay due. A
transition a call has already applied is not due any more: the tick finds
it done and applies nothing twice.

KEYS[1]  meetingd:{p<P>}:due
ARGV[1]  now (ms; '' for Redis TIME)
ARGV[2]  budget: most timeouts in this call, 1..1000 ('' for 1000)
ARGV[3]  batch: most instances in this call, 1..1000 ('' for 100)
ARGV[4]  retention (ms; '' or 0: history kept for ever; see meet_join)
Returns: {activated, {"M/O"...}, ended, {"M/O"...}, missed, {"M/O"...},
  timeouts, <n>, handled, <n>, more, <0 or 1>}: `handled` due entries were
  looked at, each now done, due later, or (a drain cut short) still due.
Errors: BAD_REQUEST.
]]
local function tick(keys, args)
  check_arity(args, 0, 4, '[now[, budget[, batch[, retention]]]]')
  local base = partition_key(keys[1], 'due')
  local now = clock(args[1])
  local budget = check_limit(args[2])
  local batch = check_count(args[3], 'batch', PAGE_MAX, 100)
  local retention = check_retention(args[4])
  local due_index, active_index = keys[1], base .. 'active'
  local activated, ended, missed = {}, {}, {}
  local timeouts = 0
  local starting, meetings = {}, {}

  -- Ends, drains and missed windows first; gather who may start, by meeting.
  local names = redis.call('ZRANGE', due_index, '-inf', now, 'BYSCORE', 'LIMIT', 0, batch)
  for _, name in ipairs(names) do
    local meeting, order = string.match(name, '^(%d+)/(%d+)$')
    local inst = meeting and load_instance(base, meeting, order)
    if not inst then
      -- an entry for no instance: nothing is due
      redis.call('ZREM', due_index, name)
    elseif inst.state == 'active' then
      if later(inst.to, now) then
        redis.call('ZADD', due_index, inst.to, name)
      else
        local users = end_instance(inst, inst.to, now, budget, retention, due_index, active_index, 'scheduled')
        budget, timeouts = budget - #users, timeouts + #users
        ended[#ended + 1] = name
      end
    elseif inst.state == 'ended' then
      local users, remaining = time_out(inst, ended_at(inst), now, budget, retention)
      budget, timeouts = budget - #users, timeouts + #users
      if remaining == 0 then
        redis.call('ZREM', due_index, name)
      end
    elseif not later(inst.to, now) then
      miss(inst, due_index, now, retention)
      missed[#missed + 1] = name
    elseif later(inst.from, now) then
      redis.call('ZADD', due_index, inst.from, name)
    else
      if not starting[meeting] then
        starting[meeting] = {}
        meetings[#meetings + 1] = meeting
      end
      table.insert(starting[meeting], inst)
    end
  end

  -- Starts: each meeting settled as a call would settle it.
  for _, meeting in ipairs(meetings) do
    local f = redis.call('HMGET', base .. 'meeting:' .. meeting, 'live', 'preempt')
    local _, done = settle(base, meeting, f[1], f[2], now, budget, retention, starting[meeting])
    budget, timeouts = budget - done.timeouts, timeouts + done.timeouts
    for _, list in ipairs({ { activated, done.activated }, { ended, done.ended }, { missed, done.missed } }) do
      for _, n in ipairs(list[2]) do
        list[1][#list[1] + 1] = n
      end
    end
  end

  local more = redis.call('ZRANGE', due_index, '-inf', now, 'BYSCORE', 'LIMIT', 0, 1)
  return {
    'activated', activated, 'ended', ended, 'missed', missed,
    'timeouts', timeouts, 'handled', #names, 'more', #more,
  }
end

redis.register_function('meet_tick', tick)
