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
    "<O>|<to>|<ms>|<seq>": which instance runs, its scheduled end, and the
    last id (<seq> empty: nothing handed out at <ms> yet, which is then a
    floor: the start of the window). JOIN, LEAVE and POST read all they
    need in one HMGET and write back only this field;
  * otherwise in the schedule's <O>#id, "<ms>-<seq>" in the same form.
]]

-- The schedule's field naming the instance that ended last: where a POST
-- retried by meeting alone (no order) finds its key once nothing runs.
local LAST_ENDED = 'last#ended'

-- The parts of a `live` field: order, to, ms, seq (nil when there is none).
local function parse_live(live)
  return string.match(live or '', '^(%d+)|(%d+)|(%d+)|(%d*)$')
end

local function format_live(order, to, ms, seq)
  return order .. '|' .. to .. '|' .. ms .. '|' .. seq
end

-- The id that follows (ms, seq) at `now`, as its two parts.
local function next_id(now, ms, seq)
  if later(now, ms) then
    return now, '0'
  end
  if seq == '' then
    return ms, '0'
  end
  return ms, tostring(seq + 1)
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

--[[ The running instance a JOIN, LEAVE or POST names (`order`, or '' for
whichever runs), from its meeting's `live` field, at `now`: its order, end
and last id. A window that is over at `now` is not running, even before
the tick that ends it. ]]
local function running(key, base, meeting, order, live, now)
  local o, to, ms, seq = parse_live(live)
  if o and (order == '' or order == o) and later(to, now) then
    return o, to, ms, seq
  end
  not_running(key, base, meeting, order)
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

-- The last id an instance handed out, as (ms, seq), and whether it is kept
-- in the live field.
local function last_id(inst)
  if inst.state == 'active' then
    local o, _, ms, seq = parse_live(redis.call('HGET', inst.key, 'live'))
    if o == inst.order then
      return ms, seq, true
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
  local ms, seq, live = last_id(inst)
  local before = ms
  local ids = {}
  for i = 1, count do
    ms, seq = next_id(now, ms, seq)
    ids[i] = ms .. '-' .. seq
  end
  if count > 0 then
    if live then
      redis.call('HSET', inst.key, 'live', format_live(inst.order, inst.to, ms, seq))
    else
      redis.call('HSET', inst.schedule, inst.order .. '#id', ms .. '-' .. seq)
    end
  end
  return ids, before
end

-- Let a history key expire `retention` ms after the instance's scheduled
-- end `to` (0: kept for ever).
local function keep_until(key, to, retention)
  if retention > 0 then
    redis.call('PEXPIREAT', key, tonumber(to) + retention)
  end
end

-- ZREM of a list of any length, in chunks (unpack has a limit).
local function remove_members(key, members)
  local removed = 0
  for first = 1, #members, 500 do
    removed = removed + redis.call('ZREM', key, unpack(members, first, math.min(first + 499, #members)))
  end
  return removed
end

-- Start running: state active, in the partition's active index, due at its
-- end; its id sequence moves into the meeting's live field.
local function activate(inst, due_index, active_index)
  local ms, seq = last_id(inst)
  inst.state = 'active'
  write_instance(inst)
  redis.call('HDEL', inst.schedule, inst.order .. '#id')
  redis.call('HSET', inst.key, 'live', format_live(inst.order, inst.to, ms, seq))
  redis.call('ZADD', active_index, inst.meeting, inst.name)
  redis.call('ZADD', due_index, inst.to, inst.name)
end

--[[ End participation: up to `budget` participants leave with a timeout
event stamped `at` (never before the event it follows), in join order.
Returns the users timed out and how many are still in. ]]
local function time_out(inst, at, now, budget, retention)
  local users = {}
  if budget > 0 then
    users = redis.call('ZRANGE', inst.present, 0, budget - 1)
  end
  if #users > 0 then
    local ids, before = take_ids(inst, now, #users)
    if later(before, at) then
      at = before
    end
    for i, user in ipairs(users) do
      redis.call('XADD', inst.events, ids[i], 'u', user, 't', '3', 'at', at, 'end', inst.to)
      announce(inst.base, inst.name, ids[i - 1], ids[i], '3', user, at .. ' ' .. inst.to)
    end
    remove_members(inst.present, users)
    keep_until(inst.events, inst.to, retention)
  end
  return users, redis.call('ZCARD', inst.present)
end

-- When an ended instance ended (its timeouts' `at`).
local function ended_at(inst)
  return redis.call('HGET', inst.schedule, inst.order .. '#end') or inst.to
end

--[[ End a running instance at `at` (not before its last event) and time
out up to `budget` participants. What remains is drained by later calls
(END again, or the tick: the instance stays due). Returns the users timed
out and how many remain. ]]
local function end_instance(inst, at, now, budget, retention, due_index, active_index)
  local ms, seq = last_id(inst)
  if later(ms, at) then
    at = ms
  end
  inst.state = 'ended'
  write_instance(inst)
  redis.call('HSET', inst.schedule, inst.order .. '#end', at, inst.order .. '#id', ms .. '-' .. seq,
    LAST_ENDED, inst.order)
  redis.call('HDEL', inst.key, 'live')
  redis.call('ZREM', active_index, inst.name)
  local users, remaining = time_out(inst, at, now, budget, retention)
  if remaining > 0 then
    redis.call('ZADD', due_index, now, inst.name)
  else
    redis.call('ZREM', due_index, inst.name)
  end
  return users, remaining
end
