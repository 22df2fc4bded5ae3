--[[
meet_instance_set: create an instance of a meeting, or move its window.

A new or scheduled instance is (re)scheduled: the due index gets it at
`from`, and so does its meeting's upcoming index (order -> from, see
instances.lua); the first call on the meeting at or after `from`, or the
tick, starts it then. If the meeting's running instance is of a lower
order, the meeting's `preempt` moves to this `from` when that is earlier,
so the JOIN that meets the window sees it. This call itself starts nothing
(but when it ends a running instance, a window that instance held back
starts, as after END): its reply's state is the stored one. A running instance keeps running
with its new window, due again at its new `to`; a `to` moved to `now` or
before ends it now (its participants time out, stamped now), so no event
is ever stamped before the one it follows. An ended instance cannot change.

With FUTURE (ARGV[7]) the call changes only what is still to come, and is
refused otherwise: an instance that has started keeps its `from`, a running
one's `to` may only move to a time after `now` (so it never ends it), and an
ended one stays as it is. A window equal to the stored one is accepted as
is, whatever the state. Imports send it, so that loading a file again never
rewrites what already happened.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  order id
ARGV[2]  from (ms since the epoch)
ARGV[3]  to   (ms since the epoch, after from)
ARGV[4]  now (ms; optional, '' for Redis TIME)
ARGV[5]  budget: most participants to time out when it ends now, 1..1000
         (optional, default 1000; the tick times out the rest)
ARGV[6]  retention (ms; optional, '' or 0 for none; see meet_join)
ARGV[7]  'FUTURE' (optional): change only what is still to come
Returns: {meeting, <id>, order, <id>, from, <ms>, to, <ms>, state, <state>}.
Errors: BAD_REQUEST (to <= from, an ended instance; with FUTURE, a started
  instance's from, or a running one's to at or before now), NOT_FOUND (no
  such meeting).
]]
local function instance_set(keys, args)
  check_arity(args, 3, 7, 'order, from, to[, now[, budget[, retention[, FUTURE]]]]')
  local base, meeting = meeting_key(keys[1])
  local order = check_id(args[1], 'order')
  local from = check_time(args[2], 'from')
  local to = check_time(args[3], 'to')
  if not later(to, from) then
    fail('BAD_REQUEST', 'to must be after from')
  end
  local now = clock(args[4])
  local budget = check_limit(args[5])
  local retention = check_retention(args[6])
  local future = args[7] == 'FUTURE'
  if not future and args[7] and args[7] ~= '' then
    fail('BAD_REQUEST', "ARGV[7] must be 'FUTURE' or left out, got " .. show(args[7]))
  end
  if redis.call('EXISTS', keys[1]) == 0 then
    fail('NOT_FOUND', 'meeting ' .. meeting .. ' does not exist')
  end
  local inst = load_instance(base, meeting, order)
  if inst and future and inst.state ~= 'scheduled' then
    if inst.from == from and inst.to == to then
      return { 'meeting', meeting, 'order', order, 'from', from, 'to', to, 'state', inst.state }
    end
    if inst.state ~= 'ended' and inst.from ~= from then
      fail('BAD_REQUEST', 'instance ' .. inst.name ..
        ' has started: its from cannot move (FUTURE changes only what is still to come)')
    end
    if inst.state ~= 'ended' and not later(to, now) then
      fail('BAD_REQUEST', 'instance ' .. inst.name ..
        ' is running: its to may only move to a time still to come (FUTURE; END ends it now)')
    end
  end
  if inst and inst.state == 'ended' then
    fail('BAD_REQUEST', 'instance ' .. inst.name .. ' has ended and cannot change')
  end
  inst = inst or new_instance(base, meeting, order)
  inst.state = inst.state or 'scheduled'
  inst.from, inst.to = from, to
  write_instance(inst)
  redis.call('ZADD', base .. 'orders:' .. meeting, order, order)
  outbox_add(base, 'k', 'instance', 'm', meeting, 'o', order, 'from', from, 'to', to)
  local due_index = base .. 'due'
  if inst.state ~= 'active' then
    redis.call('ZADD', due_index, from, inst.name)
    index_scheduled(inst)
  elseif later(to, now) then
    local _, _, ms, seq, preempt = parse_live(redis.call('HGET', keys[1], 'live'))
    redis.call('HSET', keys[1], 'live', format_live(order, to, ms, seq, preempt))
    redis.call('ZADD', due_index, to, inst.name)
  else
    end_instance(inst, now, now, budget, retention, due_index, base .. 'active', 'ended')
    -- a window this instance held back may hold now (as after END)
    settle(base, meeting, false, redis.call('HGET', keys[1], 'preempt'), now, budget, retention)
  end
  return { 'meeting', meeting, 'order', order, 'from', from, 'to', to, 'state', inst.state }
end

redis.register_function('meet_instance_set', instance_set)
