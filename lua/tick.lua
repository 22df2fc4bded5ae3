--[[
meet_tick: the second step of a tick: apply the transitions due at `now`
for the instances meet_due listed (a bounded batch), and say whether more
are due.

Every transition is re-checked here, inside the atomic call: an instance
that another tick handled already, or whose meeting's active instance is
no longer the one listed, is skipped (it stays due and the next meet_due
lists it again). So two ticks at once never apply a transition twice.

For each listed instance, by its state:
  * active and to <= now: ended; participants time out (at = to).
  * scheduled and to <= now: its whole window passed while nothing ran:
    ended without events (reported as missed).
  * scheduled and from <= now < to: activated, unless its meeting has an
    active instance of a higher order that is still running, or a higher
    order of the same meeting in this batch wins; the loser is due again
    when the winner ends (or at its own end, if sooner). Activating ends
    the meeting's other active instance (timeouts at now).
  * ended with participants left (a drain cut short by the budget): more
    of them time out.
At most `budget` participants time out per call; the rest stay due.

KEYS[1]  meetingd:{p<P>}:due
KEYS[2]  meetingd:{p<P>}:active
then for each listed instance M/O with active order A (A = O when none):
  meetingd:{p<P>}:schedule:M
  meetingd:{p<P>}:present:M/O
  meetingd:{p<P>}:events:M/O
  meetingd:{p<P>}:present:M/A
  meetingd:{p<P>}:events:M/A
ARGV[1]  now (ms; '' for Redis TIME)
ARGV[2]  budget: most timeouts in this call, 1..1000 ('' for 1000)
ARGV[3]  retention (ms; '' or 0: history kept for ever; see meet_join)
then for each listed instance: meeting, order, active order or ''
  (at most 1000 instances)
Returns: {activated, {"M/O"...}, ended, {"M/O"...}, missed, {"M/O"...},
  timeouts, n, skipped, n, more, 0 or 1}.
Errors: BAD_REQUEST.
]]
local function tick(keys, args)
  if #args < 3 or (#args - 3) % 3 ~= 0 or (#args - 3) / 3 > PAGE_MAX then
    fail('BAD_REQUEST', 'expected now, budget, retention, then meeting, order, active order for up to '
      .. PAGE_MAX .. ' instances')
  end
  local tag = partition_tag(keys)
  local now = clock(args[1])
  local budget = check_limit(args[2])
  local retention = check_retention(args[3])
  local names = { key(tag, 'due'), key(tag, 'active') }
  local listed = {}
  for i = 0, (#args - 3) / 3 - 1 do
    local meeting = check_id(args[4 + 3 * i], 'meeting')
    local order = check_id(args[5 + 3 * i], 'order')
    local plan = args[6 + 3 * i]
    if plan ~= '' then
      check_id(plan, 'active order')
    else
      plan = nil
    end
    local name = instance_name(meeting, order)
    local other = instance_name(meeting, plan or order)
    local base = #names
    names[base + 1] = key(tag, 'schedule', meeting)
    names[base + 2] = key(tag, 'present', name)
    names[base + 3] = key(tag, 'events', name)
    names[base + 4] = key(tag, 'present', other)
    names[base + 5] = key(tag, 'events', other)
    listed[#listed + 1] = { meeting = meeting, order = order, name = name, plan = plan, base = base }
  end
  expect_keys(keys, names)
  local due_index, active_index = keys[1], keys[2]
  local activated, ended, missed = {}, {}, {}
  local timeouts, skipped = 0, 0
  local starting, meetings = {}, {}

  -- Ends, drains and missed windows first; collect activations per meeting.
  for _, c in ipairs(listed) do
    local schedule, present, events = keys[c.base + 1], keys[c.base + 2], keys[c.base + 3]
    local score = redis.call('ZSCORE', due_index, c.name)
    local inst = read_instance(schedule, c.meeting, c.order)
    if not score or tonumber(score) > now or not inst then
      skipped = skipped + 1
    elseif inst.state == 'active' then
      if inst.to <= now then
        local users = end_instance(schedule, present, events, due_index, active_index, inst,
          inst.to, now, budget, retention)
        budget, timeouts = budget - #users, timeouts + #users
        ended[#ended + 1] = c.name
      else
        redis.call('ZADD', due_index, inst.to, c.name)
      end
    elseif inst.state == 'ended' then
      local users, remaining = time_out(schedule, present, events, inst, ended_at(schedule, inst),
        now, budget, retention)
      budget, timeouts = budget - #users, timeouts + #users
      if remaining == 0 then
        redis.call('ZREM', due_index, c.name)
      end
    elseif inst.to <= now then
      inst.state = 'ended'
      write_instance(schedule, inst)
      redis.call('HSET', schedule, c.order .. '#end', inst.to)
      redis.call('ZREM', due_index, c.name)
      missed[#missed + 1] = c.name
    elseif inst.from > now then
      redis.call('ZADD', due_index, inst.from, c.name)
    else
      c.inst = inst
      if not starting[c.meeting] then
        starting[c.meeting] = {}
        meetings[#meetings + 1] = c.meeting
      end
      table.insert(starting[c.meeting], c)
    end
  end

  -- Activations: per meeting, the highest order due wins.
  for _, meeting in ipairs(meetings) do
    local candidates = starting[meeting]
    local best = candidates[1]
    for _, c in ipairs(candidates) do
      if tonumber(c.order) > tonumber(best.order) then
        best = c
      end
    end
    local schedule = keys[best.base + 1]
    local current = active_order(active_index, meeting)
    local winner = best.inst
    if current and (current ~= best.plan or current == best.order) then
      -- the active instance is not the one listed: its keys are not declared
      skipped = skipped + #candidates
      winner = nil
    elseif current then
      local running = read_instance(schedule, meeting, current)
      if running.to <= now or tonumber(current) < tonumber(best.order) then
        local users = end_instance(schedule, keys[best.base + 4], keys[best.base + 5], due_index,
          active_index, running, math.min(running.to, now), now, budget, retention)
        budget, timeouts = budget - #users, timeouts + #users
        ended[#ended + 1] = instance_name(meeting, current)
      else
        winner = running
      end
    end
    if winner then
      if winner == best.inst then
        winner.state = 'active'
        write_instance(schedule, winner)
        redis.call('ZADD', active_index, meeting, best.name)
        redis.call('ZADD', due_index, winner.to, best.name)
        activated[#activated + 1] = best.name
      end
      for _, c in ipairs(candidates) do
        if c.inst ~= winner then
          redis.call('ZADD', due_index, math.min(c.inst.to, winner.to), c.name)
        end
      end
    end
  end

  local more = redis.call('ZRANGE', due_index, '-inf', now, 'BYSCORE', 'LIMIT', 0, 1)
  return {
    'activated', activated, 'ended', ended, 'missed', missed,
    'timeouts', timeouts, 'skipped', skipped, 'more', #more,
  }
end

redis.register_function { function_name = 'meet_tick', callback = guard(tick) }
