--[[
instances: an instance's window and state, its id sequence, and the
transitions (start running, end, time out).

The schedule hash holds every instance: field <O> is "from|to|state" (ms
since the epoch; state scheduled, active or ended), <O>#end when it ended
(the scheduled end, or the moment of END or of a pre-emption if earlier),
and `last#ended` the order of the instance that ended last.

Ids: one sequence per instance, shared by its event log and its chat, so
ids are unique and ordered across both (a watcher merges the two streams by
id). An id is "<ms>-<seq>" with ms = max(now, the last id's ms): an
instance's times never go backwards, even when a clock does, and an entry's
time is its id's ms. Where the last id is kept:
  * while the instance runs, in its meeting's hash, field `live` =
    "<O>|<to>|<ms>|<seq>[|<preempt>]": which instance runs, its scheduled
    end, and the last id (<seq> empty: nothing handed out at <ms> yet,
    which is then a floor: the start of the window), and the meeting's
    `preempt` when one is known (below). JOIN, LEAVE and POST read this
    field (and JOIN `public`), and write back only this field;
  * otherwise in the schedule's <O>#id, "<ms>-<seq>" in the same form.

The clock decides (issue 24): an instance runs exactly while
from <= now < to, and where windows overlap the highest order whose window
holds now wins (starting it ends the other, timeouts at now). The stored
state lags behind the clock between ticks, so:
  * a write (JOIN, LEAVE, POST, END) first applies what is due for its
    meeting (`settle`): the live instance past its `to` ends (timeouts
    stamped at `to`, at most SETTLE_BUDGET of them; the tick drains the
    rest), scheduled windows that passed unstarted end as missed, and the
    scheduled instance that wins the overlap rule starts. The tick applies
    the same function to the meetings nobody touches;
  * a read (no-writes) cannot write: it asks `pending` what the clock says
    and reports that (an instance past `to` is ended and has nobody in it,
    one whose window opened and that wins is active, with nobody yet).
To find a meeting's opened windows cheaply, `upcoming:<M>` (a sorted set,
order -> from) holds exactly the meeting's scheduled instances. To keep the
hot path at one read, the meeting hash's `preempt` field says from when a
scheduled instance of a higher order than the live one may open (the
earliest such `from`, or earlier: a call at or after it only looks again);
it is absent when none is known, and means nothing without `live`. The
live field carries a copy as its fifth part, so the hot calls read one
field: every write of `preempt` rewrites `live` to match, and a live field
has a fifth part exactly when a `preempt` is known (data of 0.4.0, whose
live fields had four parts, is brought to that at start-up by
meet_upgrade). A JOIN, LEAVE or POST whose `live` names an instance inside
its window, with no `preempt` at or before now, does what it did before:
nothing more.
]]

-- Most timeouts a JOIN, LEAVE or POST stamps when it ends an instance that
-- is over; the tick drains the rest (the instance stays due).
local SETTLE_BUDGET = 100
-- The first entries of a meeting's `upcoming` index read at once: the
-- opened windows come first (by `from`), then the next ones, which say
-- when the winner may be pre-empted.
local UPCOMING_LOOK = 16
-- Most opened windows of one meeting looked at in one call.
local OPENED_MAX = 1000

-- The schedule's field naming the instance that ended last: where a POST,
-- JOIN or LEAVE retried by meeting alone (no order) finds its key once
-- nothing runs.
local LAST_ENDED = 'last#ended'


-- The parts of a `live` field: order, to, ms, seq and its copy of the
-- meeting's `preempt` (false when none is known); nil when there is none.
local function parse_live(live)
  local o, to, ms, seq, preempt = string.match(live or '', '^(%d+)|(%d+)|(%d+)|(%d*)|(%d+)$')
  if o then
    return o, to, ms, seq, preempt
  end
  o, to, ms, seq = string.match(live or '', '^(%d+)|(%d+)|(%d+)|(%d*)$')
  return o, to, ms, seq, false
end

-- A live field (`preempt`: false or nil when none is known).
local function format_live(order, to, ms, seq, preempt)
  if preempt then
    return order .. '|' .. to .. '|' .. ms .. '|' .. seq .. '|' .. preempt
  end
  return order .. '|' .. to .. '|' .. ms .. '|' .. seq
end

-- The live field `live` with another preempt (false: none), or false when
-- `live` names no instance.
local function with_preempt(live, preempt)
  local o, to, ms, seq = parse_live(live)
  return o ~= nil and format_live(o, to, ms, seq, preempt)
end

-- The successor of each sequence number below 256, as text: a sequence
-- grows by one within a millisecond, and tostring(seq + 1) is costly.
local NEXT_SEQ = {}
for n = 0, 255 do
  NEXT_SEQ[n .. ''] = (n + 1) .. ''
end

-- The id that follows (ms, seq) at `now`, as its two parts.
local function next_id(now, ms, seq)
  if later(now, ms) then
    return now, '0'
  end
  if seq == '' then
    return ms, '0'
  end
  return ms, NEXT_SEQ[seq] or tostring(seq + 1)
end

-- Refuse a call that names no running instance: the meeting or the
-- instance does not exist, or it is not running.
local function not_running(key, base, meeting, order)
  if redis.call('EXISTS', key) == 0 then
    fail('NOT_FOUND', 'meeting ' .. meeting .. ' does not exist')
  end
  if order == '' then
    fail('INACTIVE', 'meeting ' .. meeting .. ' has no active instance')
  end
  if redis.call('HEXISTS', base .. 'schedule:' .. meeting, order) == 0 then
    fail('NOT_FOUND', 'instance ' .. instance_name(meeting, order) .. ' does not exist')
  end
  fail('INACTIVE', 'instance ' .. instance_name(meeting, order) .. ' is not active')
end

--[[ An instance, for the paths that are not hot: its keys, and its window
and state (strings) as `packed` in the schedule says ("from|to|state"). ]]
local function new_instance(base, meeting, order, packed)
  local name = instance_name(meeting, order)
  local inst = {
    base = base, meeting = meeting, order = order, name = name,
    key = base .. 'meeting:' .. meeting, schedule = base .. 'schedule:' .. meeting,
    present = base .. 'present:' .. name, events = base .. 'events:' .. name,
  }
  if packed then
    inst.from, inst.to, inst.state = string.match(packed, '^(%d+)|(%d+)|(%a+)$')
    if not inst.state then
      error('the schedule entry of ' .. name .. ' is corrupt: ' .. show(packed))
    end
  end
  return inst
end

-- An instance as the schedule has it, or nil when it does not exist.
local function load_instance(base, meeting, order)
  local packed = redis.call('HGET', base .. 'schedule:' .. meeting, order)
  if not packed then
    return nil
  end
  return new_instance(base, meeting, order, packed)
end

-- The instance named by `order`, or ('') the meeting's running one; refused
-- when there is none.
local function find_instance(base, meeting, order)
  local key = base .. 'meeting:' .. meeting
  if order == '' then
    order = parse_live(redis.call('HGET', key, 'live'))
    if not order then
      not_running(key, base, meeting, '')
    end
  end
  local inst = load_instance(base, meeting, order)
  if not inst then
    if redis.call('EXISTS', key) == 0 then
      fail('NOT_FOUND', 'meeting ' .. meeting .. ' does not exist')
    end
    fail('NOT_FOUND', 'instance ' .. instance_name(meeting, order) .. ' does not exist')
  end
  return inst
end

local function write_instance(inst)
  redis.call('HSET', inst.schedule, inst.order, inst.from .. '|' .. inst.to .. '|' .. inst.state)
end

-- The last id an instance handed out, as (ms, seq), whether it is kept
-- in the live field, and then the live field's preempt.
local function last_id(inst)
  if inst.state == 'active' then
    local o, _, ms, seq, preempt = parse_live(redis.call('HGET', inst.key, 'live'))
    if o == inst.order then
      return ms, seq, true, preempt
    end
  end
  local ms, seq = string.match(redis.call('HGET', inst.schedule, inst.order .. '#id') or '', '^(%d+)%-(%d*)$')
  if ms then
    return ms, seq, false
  end
  return inst.from, '', false
end

-- The last id as a cursor: what a watcher starting now reads after.
local function last_cursor(inst)
  local ms, seq = last_id(inst)
  if seq == '' then
    return '0-0'
  end
  return ms .. '-' .. seq
end

--[[ Hand out `count` ids at `now`. Returns them, and the ms of the id
before them (a floor for the times of what they stamp). ]]
local function take_ids(inst, now, count)
  local ms, seq, live, preempt = last_id(inst)
  local before = ms
  local ids = {}
  for i = 1, count do
    ms, seq = next_id(now, ms, seq)
    ids[i] = ms .. '-' .. seq
  end
  if count > 0 then
    if live then
      redis.call('HSET', inst.key, 'live', format_live(inst.order, inst.to, ms, seq, preempt))
    else
      redis.call('HSET', inst.schedule, inst.order .. '#id', ms .. '-' .. seq)
    end
  end
  return ids, before
end

--[[ Archiving. A partition archives while its outbox stream exists (the
daemon creates it, with its consumer group, when an archive is
configured): the calls that end an instance or write a meeting, its
audience or an instance append to it, in the same call, what the archiver
is to copy into the database; and no history key of the partition gets an
expiry until the archiver has copied it (it sets the expiry itself then,
meet_archived). Without the stream nothing of this happens. ]]
local function archiving(base)
  return redis.call('EXISTS', base .. 'outbox') == 1
end

-- Append an entry (field/value pairs) to the partition's outbox, if it
-- archives, and wake the archivers: the entry's id is published on the
-- partition's channel of the same name, `meetingd:{p<P>}:outbox` (a
-- channel, not the key; SPUBLISH, so the partition's tag routes it to
-- the master that holds the outbox). A wake-up that is lost only
-- delays: the archivers also look at every outbox now and then.
local function outbox_add(base, ...)
  if archiving(base) then
    local id = redis.call('XADD', base .. 'outbox', '*', ...)
    redis.call('SPUBLISH', base .. 'outbox', id)
  end
end

-- Let a history key expire `retention` ms after the instance's scheduled
-- end `to` (0: kept for ever; and no expiry at all while its partition
-- archives: the archiver sets it once the history is copied).
local function keep_until(key, to, retention)
  if retention > 0 and not archiving(string.match(key, '^meetingd:{p%d+}:') or '') then
    redis.call('PEXPIREAT', key, tonumber(to) + retention)
  end
end

--[[ Keys of writes (POST, JOIN, LEAVE `ID <key>`): an instance's hash
`posted:<M/O>` maps `<user>:<key>` (POST) or `<user>/join/<key>` and
`<user>/leave/<key>` (a `/` is in no key and no id, so the three never
meet) to the id the first write got. `keyed_before` finds it for the
instance `order` names ('' for the running one, or else the one that ended
last): the instance's order and that id, or nil when the key is new. ]]
local function keyed_before(base, meeting, order, live, field)
  if order == '' then
    order = parse_live(live) or redis.call('HGET', base .. 'schedule:' .. meeting, LAST_ENDED)
    if not order then
      return nil
    end
  end
  local first = redis.call('HGET', base .. 'posted:' .. instance_name(meeting, order), field)
  if first then
    return order, first
  end
  return nil
end

-- Remember a keyed write's id in its instance (see keyed_before).
local function keep_key(base, name, field, id, to, retention)
  local posted = base .. 'posted:' .. name
  redis.call('HSET', posted, field, id)
  keep_until(posted, to, retention)
end

-- ZREM of a list of any length, in chunks (unpack has a limit).
local function remove_members(key, members)
  local removed = 0
  for first = 1, #members, 500 do
    removed = removed + redis.call('ZREM', key, unpack(members, first, math.min(first + 499, #members)))
  end
  return removed
end

--[[ Start running at `now`: state active, out of its meeting's upcoming
index, in the partition's active index, due at its end; a start entry
(t=4, `at` the moment it started by the clock) opens its event log, and
is announced (see watch.lua); its id sequence moves into the meeting's
live field, with `preempt` when one is known (see next_preempt). Returns
the live field. ]]
local function activate(inst, due_index, active_index, preempt, now, at, retention)
  local ms, seq = last_id(inst)
  local prev = prev_id(ms, seq)
  ms, seq = next_id(now, ms, seq)
  local id = ms .. '-' .. seq
  local live = format_live(inst.order, inst.to, ms, seq, preempt)
  inst.state = 'active'
  write_instance(inst)
  redis.call('ZREM', inst.base .. 'upcoming:' .. inst.meeting, inst.order)
  if preempt then
    redis.call('HSET', inst.key, 'live', live, 'preempt', preempt)
  else
    redis.call('HSET', inst.key, 'live', live)
  end
  redis.call('ZADD', active_index, inst.meeting, inst.name)
  redis.call('ZADD', due_index, inst.to, inst.name)
  redis.call('XADD', inst.events, id, 't', '4', 'at', at)
  announce(inst.base, inst.name, prev, id, '4', '-', at)
  keep_until(inst.events, inst.to, retention)
  announce_transition(inst.base, inst.meeting, inst.order, inst.from, inst.to, '4', at, nil, now)
  return live
end

-- The time of the last event in a log (a timeout's is its `at`, any
-- other's its id's ms), or nil when the log is empty.
local function last_event_time(events)
  local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)[1]
  if not last then
    return nil
  end
  local fields = last[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'at' then
      return fields[i + 1]
    end
  end
  return string.match(last[1], '^(%d+)')
end

-- When an ended instance ended (its timeouts' `at`).
local function ended_at(inst)
  return redis.call('HGET', inst.schedule, inst.order .. '#end') or inst.to
end

--[[ An instance is over and nobody is left in it: its whole history is
written, and the archiver may copy it (k=end: meeting, order, window, when
it ended). ]]
local function outbox_ended(inst)
  outbox_add(inst.base, 'k', 'end', 'm', inst.meeting, 'o', inst.order,
    'from', inst.from, 'to', inst.to, 'ended', ended_at(inst))
end

--[[ End participation: up to `budget` participants leave with a timeout
event stamped `at` (never before the log's last event: a later share of a
drain is stamped as the first was), in join order. Returns the users timed
out and how many are still in. ]]
local function time_out(inst, at, now, budget, retention)
  local users = {}
  if budget > 0 then
    users = redis.call('ZRANGE', inst.present, 0, budget - 1)
  end
  if #users > 0 then
    local ids = take_ids(inst, now, #users)
    local floor = last_event_time(inst.events)
    if floor and later(floor, at) then
      at = floor
    end
    for i, user in ipairs(users) do
      redis.call('XADD', inst.events, ids[i], 'u', user, 't', '3', 'at', at, 'end', inst.to)
      announce(inst.base, inst.name, ids[i - 1], ids[i], '3', user, at .. ' ' .. inst.to)
    end
    remove_members(inst.present, users)
    keep_until(inst.events, inst.to, retention)
  end
  local remaining = redis.call('ZCARD', inst.present)
  if remaining == 0 and inst.state == 'ended' and (#users > 0 or inst.ending) then
    outbox_ended(inst)
  end
  return users, remaining
end


--[[ End a running instance at `at` (not before its last event) for
reason `why` (scheduled: its `to` came; preempted: a window of a higher
order opened; ended: END, or its `to` moved to now or before): an end
entry (t=5) closes its event log and is announced, then up to `budget`
participants time out. What remains is drained by later calls (END again,
or the tick: the instance stays due). Returns the users timed out and how
many remain. ]]
local function end_instance(inst, at, now, budget, retention, due_index, active_index, why)
  local ms, seq = last_id(inst)
  if later(ms, at) then
    at = ms
  end
  local prev = prev_id(ms, seq)
  ms, seq = next_id(now, ms, seq)
  local id = ms .. '-' .. seq
  inst.state = 'ended'
  write_instance(inst)
  redis.call('HSET', inst.schedule, inst.order .. '#end', at, inst.order .. '#id', id, LAST_ENDED, inst.order)
  redis.call('HDEL', inst.key, 'live')
  redis.call('ZREM', active_index, inst.name)
  redis.call('XADD', inst.events, id, 't', '5', 'at', at, 'end', inst.to, 'why', why)
  announce(inst.base, inst.name, prev, id, '5', '-', at .. ' ' .. inst.to .. ' ' .. why)
  keep_until(inst.events, inst.to, retention)
  announce_transition(inst.base, inst.meeting, inst.order, inst.from, inst.to, '5', at, why, now)
  inst.ending = true
  local users, remaining = time_out(inst, at, now, budget, retention)
  if remaining > 0 then
    redis.call('ZADD', due_index, now, inst.name)
  else
    redis.call('ZREM', due_index, inst.name)
  end
  return users, remaining
end

-- The clock's part: what is due for one meeting at `now`, read (pending)
-- or applied (settle). See the header.

-- A window that passed while its instance was scheduled: ended, with an
-- end entry (why: missed; no start entry) and nothing else, `#end` its
-- scheduled end, out of the indexes.
local function miss(inst, due_index, now, retention)
  local ms, seq = last_id(inst)
  local prev = prev_id(ms, seq)
  ms, seq = next_id(now, ms, seq)
  local id = ms .. '-' .. seq
  inst.state = 'ended'
  write_instance(inst)
  redis.call('HSET', inst.schedule, inst.order .. '#end', inst.to, inst.order .. '#id', id)
  redis.call('ZREM', due_index, inst.name)
  redis.call('ZREM', inst.base .. 'upcoming:' .. inst.meeting, inst.order)
  redis.call('XADD', inst.events, id, 't', '5', 'at', inst.to, 'end', inst.to, 'why', 'missed')
  announce(inst.base, inst.name, prev, id, '5', '-', inst.to .. ' ' .. inst.to .. ' missed')
  keep_until(inst.events, inst.to, retention)
  announce_transition(inst.base, inst.meeting, inst.order, inst.from, inst.to, '5', inst.to, 'missed', now)
  outbox_ended(inst)
end

--[[ A scheduled instance in its meeting's upcoming index (at its `from`),
and the meeting's `preempt` moved to that `from` when the instance would
pre-empt the running one sooner. Returns 1 when the index did not hold it
(0 when it did, at whatever time). ]]
local function index_scheduled(inst)
  local added = redis.call('ZADD', inst.base .. 'upcoming:' .. inst.meeting, inst.from, inst.order)
  local f = redis.call('HMGET', inst.key, 'live', 'preempt')
  local live_order = parse_live(f[1])
  if live_order and tonumber(inst.order) > tonumber(live_order) and (not f[2] or later(f[2], inst.from)) then
    redis.call('HSET', inst.key, 'preempt', inst.from, 'live', with_preempt(f[1], inst.from))
  end
  return added
end

-- Whether the live field `live` (with `preempt`) shows an instance that
-- runs at `now` with nothing due: the hot path's test, no reading.
local function settled(live, preempt, now)
  local o, to = parse_live(live)
  return o ~= nil and later(to, now) and (not preempt or later(preempt, now))
end

--[[ The `preempt` of the instance of order `order` once it runs, from the
first entries of its meeting's upcoming index (`look`, flat member/score
pairs, by `from`; `cut`: there are more): the earliest `from` of a higher
order; when none is among them and more exist, the last `from` read (a
call then looks again); false when there is none. ]]
local function next_preempt(look, order, cut)
  local n = tonumber(order)
  for i = 1, #look, 2 do
    if tonumber(look[i]) > n then
      return look[i + 1]
    end
  end
  if cut and #look > 0 then
    return look[#look]
  end
  return false
end

--[[ What the clock says of meeting `meeting` at `now` beyond what is
stored, read only: nil when nothing is due (`settled`), else a plan:
  live, live_to  the live instance's order and end (nil when none)
  ends           whether it is over by now: its `to` passed, or a window
                 of a higher order opened (pre-emption)
  start          the scheduled instance that wins the overlap rule (an
                 instance), or nil
  losers         opened scheduled instances that do not win
  missed         scheduled instances whose window passed unstarted
  stale          orders in the upcoming index that are not scheduled
  look, cut      the index's first entries (see next_preempt)
`known` (optional): scheduled instances already loaded (the tick's due
ones), considered even when the index lacks them. At most OPENED_MAX
opened windows are looked at. ]]
local function pending(base, meeting, live, preempt, now, known)
  if settled(live, preempt, now) and not known then
    return nil
  end
  local o, to = parse_live(live)
  local plan = {
    live = o, live_to = to, ends = o ~= nil and not later(to, now),
    losers = {}, missed = {}, stale = {},
  }
  local upcoming = base .. 'upcoming:' .. meeting
  local look = redis.call('ZRANGE', upcoming, 0, UPCOMING_LOOK - 1, 'WITHSCORES')
  plan.cut = #look == 2 * UPCOMING_LOOK
  local opened, by_order = {}, {}
  for i = 1, #look, 2 do
    if later(look[i + 1], now) then
      break
    end
    opened[#opened + 1] = look[i]
  end
  if plan.cut and #opened == UPCOMING_LOOK then
    -- more opened windows than the first look: the rest, bounded
    local rest = redis.call('ZRANGE', upcoming, '-inf', now, 'BYSCORE', 'LIMIT', UPCOMING_LOOK,
      OPENED_MAX - UPCOMING_LOOK)
    for _, order in ipairs(rest) do
      opened[#opened + 1] = order
    end
  end
  local candidates = {}
  for _, inst in ipairs(known or {}) do
    by_order[inst.order] = inst
  end
  local unknown = {}
  for _, order in ipairs(opened) do
    if not by_order[order] then
      unknown[#unknown + 1] = order
    end
  end
  if #unknown > 0 then
    local packed = redis.call('HMGET', base .. 'schedule:' .. meeting, unpack(unknown))
    for i, order in ipairs(unknown) do
      if packed[i] then
        by_order[order] = new_instance(base, meeting, order, packed[i])
      else
        plan.stale[#plan.stale + 1] = order
      end
    end
  end
  for _, inst in pairs(by_order) do
    if inst.state ~= 'scheduled' then
      plan.stale[#plan.stale + 1] = inst.order
    elseif later(inst.to, now) then
      candidates[#candidates + 1] = inst
    else
      plan.missed[#plan.missed + 1] = inst
    end
  end
  local best
  for _, inst in ipairs(candidates) do
    if not best or tonumber(inst.order) > tonumber(best.order) then
      best = inst
    end
  end
  if best and (not o or plan.ends or tonumber(best.order) > tonumber(o)) then
    plan.start = best
    plan.ends = o ~= nil
  end
  for _, inst in ipairs(candidates) do
    if inst ~= plan.start then
      plan.losers[#plan.losers + 1] = inst
    end
  end
  plan.look = look
  return plan
end

--[[ When instance `inst`, started at `now`, began by the clock: its
`from`, or the end of the meeting's instance before it when that came
later (`previous`: the end of the one this call just ended, if any; else
the one that ended last). ]]
local function start_time(inst, previous, now)
  if not previous then
    local last = redis.call('HGET', inst.schedule, LAST_ENDED)
    previous = last and redis.call('HGET', inst.schedule, last .. '#end')
  end
  if previous and later(previous, inst.from) and not later(previous, now) then
    return previous
  end
  return inst.from
end

--[[ Apply what is due for a meeting at `now` (see pending): the same
transitions, in the same order, for a call that meets them and for the
tick. The live instance that is over ends (timeouts stamped at `to`, or at
now when pre-empted; at most `budget`); missed windows end without events;
the winner starts, and the losers are due again when it ends (or at their
own end, if sooner). Returns the live field as it now is (false: none) and
what was done: {activated = {names}, ended = {names}, missed = {names},
timeouts = <n>, users = {the users timed out}}. ]]
local function settle(base, meeting, live, preempt, now, budget, retention, known)
  local done = { activated = {}, ended = {}, missed = {}, timeouts = 0, users = {} }
  local plan = pending(base, meeting, live, preempt, now, known)
  if not plan then
    return live, done
  end
  local key = base .. 'meeting:' .. meeting
  local due_index, active_index = base .. 'due', base .. 'active'
  if #plan.stale > 0 then
    redis.call('ZREM', base .. 'upcoming:' .. meeting, unpack(plan.stale))
  end
  for _, inst in ipairs(plan.missed) do
    miss(inst, due_index, now, retention)
    done.missed[#done.missed + 1] = inst.name
  end
  local winner_to = plan.live_to
  local ended_at_now
  if plan.ends then
    winner_to = nil
    local current = load_instance(base, meeting, plan.live)
    if current and current.state == 'active' then
      local at, why = now, 'preempted'
      if later(at, current.to) then
        at, why = current.to, 'scheduled'
      end
      local users = end_instance(current, at, now, budget, retention, due_index, active_index, why)
      done.timeouts, done.users = #users, users
      done.ended[1] = current.name
      ended_at_now = ended_at(current)
    end
    live = false
  end
  -- what runs now, and the index as it now is: its preempt
  local gone = {}
  for _, order in ipairs(plan.stale) do
    gone[order] = true
  end
  for _, inst in ipairs(plan.missed) do
    gone[inst.order] = true
  end
  if plan.start then
    gone[plan.start.order] = true
  end
  local look = {}
  for i = 1, #plan.look, 2 do
    if not gone[plan.look[i]] then
      look[#look + 1] = plan.look[i]
      look[#look + 1] = plan.look[i + 1]
    end
  end
  local runs = plan.start and plan.start.order or (live and plan.live)
  local again = runs and next_preempt(look, runs, plan.cut)
  if plan.start then
    live = activate(plan.start, due_index, active_index, again, now,
      start_time(plan.start, ended_at_now, now), retention)
    done.activated[1] = plan.start.name
    winner_to = plan.start.to
  elseif again and again ~= preempt then
    live = with_preempt(live, again)
    redis.call('HSET', key, 'preempt', again, 'live', live)
  end
  if preempt and not again then
    redis.call('HDEL', key, 'preempt')
    if live and not plan.start then
      live = with_preempt(live, false)
      redis.call('HSET', key, 'live', live)
    end
  end
  for _, inst in ipairs(plan.losers) do
    local again = inst.to
    if winner_to and later(again, winner_to) then
      again = winner_to
    end
    redis.call('ZADD', due_index, again, inst.name)
  end
  return live, done
end

--[[ A hot call's live field once what is due for its meeting at `now` is
applied (settle, at most SETTLE_BUDGET timeouts; nothing when nothing is
due): where a JOIN, LEAVE or POST with a key looks the key up. ]]
local function live_settled(base, meeting, live, now, retention)
  local preempt = select(5, parse_live(live))
  if settled(live, preempt, now) then
    return live
  end
  return (settle(base, meeting, live, preempt, now, SETTLE_BUDGET, retention))
end

--[[ The running instance a JOIN, LEAVE or POST names (`order`, or '' for
whichever runs) at `now`, from its meeting's live field, once what is due
for the meeting is applied (settle; at most SETTLE_BUDGET timeouts): its
order, end, last id and preempt; refused when it is not running.
live_write's way when its memo does not know the live field. ]]
local function running_now(key, base, meeting, order, live, now, retention)
  local o, to, ms, seq, preempt = parse_live(live)
  if not (o and later(to, now) and (not preempt or later(preempt, now))) then
    live = settle(base, meeting, live, preempt, now, SETTLE_BUDGET, retention)
    o, to, ms, seq, preempt = parse_live(live)
    if o and not later(to, now) then
      o = nil
    end
  end
  if o and (order == '' or order == o) then
    return o, to, ms, seq, preempt
  end
  not_running(key, base, meeting, order)
end

--[[ What each meeting's last hot call (JOIN, LEAVE, POST) wrote into its
live field, by meeting key: the next call on the meeting mostly reads that
text back, and comparing it spares matching it and building the next one
from scratch. A table a meeting, changed in place (no allocation a call):
`live` (the text), `order`, `to`, `preempt`, `head` ("<O>|<to>|"), `tail`
("|<preempt>" or ''), `name` ("<M>/<O>"), `ms`, `seq` and `id` (the last
id, "<ms>-<seq>"). An entry says only what its text says, so a field
written by anyone else (the tick, an instance's start or end, redis-cli)
merely misses. Up to 10000 meetings, then it starts afresh (as keys.lua's
memo). ]]
local made, made_count = {}, 0

--[[ The id a JOIN, LEAVE or POST hands out, nothing written: the running
instance it names (as running_now, refused when there is none) and the
next id of its sequence at `now` (next_id, written out). Returns the
instance's order, its scheduled end, the entry's time (ms), the id, the id
before it ('0-0' before the first: for the watchers), the live field to
write and the instance's name "<M>/<O>". The hottest lines of the
library: when the live field is the one the meeting's last hot call wrote,
inside its window and with no pre-emption due, they compare and
concatenate only. ]]
local function live_write(key, base, meeting, order, live, now, retention)
  local m = made[key]
  local o, to, ms, seq, prev, preempt
  if m and m.live == live then
    o, to, preempt = m.order, m.to, m.preempt
    if (#to > #now or (#to == #now and to > now)) and (not preempt or later(preempt, now)) then
      if order ~= '' and order ~= o then
        not_running(key, base, meeting, order)
      end
      ms, seq, prev = m.ms, m.seq, m.id
    else
      o = nil
    end
  end
  if not o then
    o, to, ms, seq, preempt = running_now(key, base, meeting, order, live, now, retention)
    prev = seq == '' and '0-0' or ms .. '-' .. seq
    if not m then
      if made_count >= 10000 then
        made, made_count = {}, 0
      end
      m, made_count = {}, made_count + 1
      made[key] = m
    end
    m.order, m.to, m.preempt, m.head, m.tail, m.name =
      o, to, preempt, o .. '|' .. to .. '|', preempt and '|' .. preempt or '', meeting .. '/' .. o
  end
  if #now > #ms or (#now == #ms and now > ms) then
    ms, seq = now, '0'
  elseif seq == '' then
    seq = '0'
  else
    seq = NEXT_SEQ[seq] or tostring(seq + 1)
  end
  local id = ms .. '-' .. seq
  live = m.head .. ms .. '|' .. seq .. m.tail
  m.live, m.ms, m.seq, m.id = live, ms, seq, id
  return o, to, ms, id, prev, live, m.name
end

--[[ The arguments JOIN, LEAVE and POST share, checked: KEYS[1], the
meeting's key; ARGV[2], the user; and from ARGV[at] on: now, retention and
the write's key (the arguments before `at` are the call's own, checked by
the caller). Returns the key, its partition prefix, the meeting, the user,
now, the retention (ms) and the write's key (nil when none). What the
library checked before (a meeting key, a user id, the last `now`) is known
by its memo at the cost of a lookup. ]]
local function write_args(keys, args, at, usage)
  local n = #args
  if n < at - 1 or n > at + 2 then
    check_arity(args, at - 1, at + 2, usage)
  end
  local key = keys[1]
  local base, meeting = checked_bases[key], checked_meetings[key]
  if not base then
    base, meeting = meeting_key(key)
  end
  local user = args[2]
  if not valid_ids[user] then
    check_id(user, 'user')
  end
  local now = args[at]
  if now ~= last_now then
    now = clock(now)
  end
  if n <= at then
    return key, base, meeting, user, now, 0, nil
  end
  return key, base, meeting, user, now, check_retention(args[at + 1]), check_post_key(args[at + 2])
end

--[[ Which instance of a meeting runs at `now` by the clock, read only, from
its `live` and `preempt` fields: its order (nil when none), whether it has
not started in the store yet (nobody can be in it), and then the instance. ]]
local function running_by_clock(base, meeting, live, preempt, now)
  local plan = pending(base, meeting, live, preempt, now)
  if not plan then
    return (parse_live(live)), false
  end
  if plan.start then
    return plan.start.order, true, plan.start
  end
  if plan.ends then
    return nil, false
  end
  return plan.live, false
end

--[[ The meetings of a partition that may have an instance running at `now`
by the clock, in meeting order, after meeting `after` (inclusive with
`inclusive`): those of the active index, and those with a transition due
by now (windows opened before a tick; at most PAGE_MAX of the due index
are looked at). At most `limit`, and whether there may be more. ]]
local function clock_meetings(base, after, inclusive, limit, now)
  local min = '-inf'
  if after then
    min = after
    if not inclusive then
      min = '(' .. after
    end
  end
  local names = redis.call('ZRANGE', base .. 'active', min, '+inf', 'BYSCORE', 'LIMIT', 0, limit + 1)
  local due = redis.call('ZRANGE', base .. 'due', '-inf', now, 'BYSCORE', 'LIMIT', 0, PAGE_MAX)
  local seen, list = {}, {}
  local floor = after and tonumber(after)
  local function add(name)
    local m = string.match(name, '^(%d+)/')
    if m and not seen[m] then
      local n = tonumber(m)
      if not floor or n > floor or (inclusive and n == floor) then
        seen[m] = true
        list[#list + 1] = m
      end
    end
  end
  for _, name in ipairs(names) do
    add(name)
  end
  for _, name in ipairs(due) do
    add(name)
  end
  table.sort(list, function(a, b) return tonumber(a) < tonumber(b) end)
  local more = #list > limit
  for i = #list, limit + 1, -1 do
    list[i] = nil
  end
  return list, more
end

-- The earlier of two times (digit strings), either of which may be
-- false (none).
local function earliest(a, b)
  if not a or (b and later(a, b)) then
    return b
  end
  return a
end

--[[ Until when a read of the partition by the clock at `now` stays true
as long as none of the keys it read changes: the first transition due
after now (the due index holds every scheduled instance at its `from` or
earlier, every running one at its `to`), or the end of a running
instance it listed (`ends`, the earliest `to` of its rows; the clock may
run one of them by a window not started in the store). false: for ever. ]]
local function valid_until(base, now, ends)
  local first = redis.call('ZRANGE', base .. 'due', '(' .. now, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
  return earliest(first[2] or false, ends)
end

-- The instance a read names by the clock: `order`, or ('') the one running
-- at `now`; refused when there is none (see find_instance).
local function find_by_clock(base, meeting, order, now)
  if order == '' or order == nil then
    local key = base .. 'meeting:' .. meeting
    local f = redis.call('HMGET', key, 'live', 'preempt')
    order = running_by_clock(base, meeting, f[1], f[2], now)
    if not order then
      not_running(key, base, meeting, '')
    end
  end
  return find_instance(base, meeting, order)
end
