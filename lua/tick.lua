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
  * scheduled and from <= now < to: starts running, unless its meeting
    has a running instance of a higher order that is not over, or a
    higher order of the same meeting is due too; a loser is due again when
    the winner ends (or at its own end, if sooner). Starting ends the
    meeting's other running instance (timeouts at now).
  * ended with participants left (a drain cut short by the budget): more
    of them time out.
At most `budget` participants time out per call; the rest stay due.

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
        local users = end_instance(inst, inst.to, now, budget, retention, due_index, active_index)
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
      inst.state = 'ended'
      write_instance(inst)
      redis.call('HSET', inst.schedule, order .. '#end', inst.to)
      redis.call('ZREM', due_index, name)
      outbox_ended(inst)
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

  -- Starts: per meeting, the highest order due wins.
  for _, meeting in ipairs(meetings) do
    local candidates = starting[meeting]
    local best = candidates[1]
    for _, inst in ipairs(candidates) do
      if tonumber(inst.order) > tonumber(best.order) then
        best = inst
      end
    end
    local winner = best
    local live_order = parse_live(redis.call('HGET', best.key, 'live'))
    local current = live_order and load_instance(base, meeting, live_order)
    if current then
      if not later(current.to, now) or tonumber(current.order) < tonumber(best.order) then
        local at = now
        if later(at, current.to) then
          at = current.to
        end
        local users = end_instance(current, at, now, budget, retention, due_index, active_index)
        budget, timeouts = budget - #users, timeouts + #users
        ended[#ended + 1] = current.name
      else
        winner = current
      end
    end
    if winner == best then
      activate(best, due_index, active_index)
      activated[#activated + 1] = best.name
    end
    for _, inst in ipairs(candidates) do
      if inst ~= winner then
        local again = inst.to
        if later(again, winner.to) then
          again = winner.to
        end
        redis.call('ZADD', due_index, again, inst.name)
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
