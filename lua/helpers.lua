--[[
helpers: the shared pieces of the meetingd library.

Everything here is a `local function` used by the operation files that
follow it in the assembled library. Nothing here is registered.

Conventions kept by every operation:
  * ids (users, meetings, orders) stay strings: Lua numbers are doubles, and
    ids go up to 2^53-1, so they are validated as digit strings and never
    used in arithmetic. Times are milliseconds since the epoch (< 2^53, so
    exact as Lua numbers).
  * all checks come before the first write: a call that answers with an
    error has changed nothing.
  * errors are replies `CODE message`, produced by `fail`, turned into a
    `redis.error_reply` by `guard` (never a bare Lua error, which Redis would
    report as ERR).
  * every key is declared in KEYS; `expect_keys` compares KEYS with the
    names the layout gives, so a redis-cli caller who passes a wrong key is
    told the right one instead of writing somewhere else.
]]

local PREFIX = 'meetingd:'
local MAX_ID = '9007199254740991'
local PAGE_MAX = 1000
local TEXT_MAX = 65536
local NAME_MAX = 1024

-- Raise a coded error; `guard` turns it into the reply.
local function fail(code, message)
  error({ meetingd_error = code .. ' ' .. message })
end

-- Wrap an operation: coded errors become error replies, anything
-- unexpected becomes INTERNAL (never ERR), a redis.call error keeps its own
-- code.
local function guard(body)
  return function(keys, args)
    local ok, result = pcall(body, keys, args)
    if ok then
      return result
    end
    if type(result) == 'table' and result.meetingd_error then
      return redis.error_reply(result.meetingd_error)
    end
    if type(result) == 'table' and result.err then
      return result
    end
    -- a failed redis.call arrives as "CODE message": keep its code
    if type(result) == 'string' and string.match(result, '^[A-Z][A-Z_]+ ') then
      return redis.error_reply(result)
    end
    return redis.error_reply('INTERNAL ' .. tostring(result))
  end
end

-- A value as it appears in an error message: quoted, at most 40 bytes.
local function show(value)
  if value == nil then
    return 'nothing'
  end
  local s = tostring(value)
  if #s > 40 then
    s = string.sub(s, 1, 40) .. '...'
  end
  return '"' .. s .. '"'
end

local function check_arity(args, min, max, usage)
  if #args < min or #args > max then
    fail('BAD_REQUEST', 'wrong number of arguments (' .. #args .. '), expected ' .. usage)
  end
end

-- A positive integer up to 2^53-1, kept as its digit string.
local function check_id(value, what)
  if type(value) ~= 'string' or not string.match(value, '^[1-9]%d*$')
      or #value > #MAX_ID or (#value == #MAX_ID and value > MAX_ID) then
    fail('BAD_REQUEST', what .. ' must be a positive integer up to 2^53-1, got ' .. show(value))
  end
  return value
end

-- Milliseconds since the epoch, as a number.
local function check_time(value, what)
  if type(value) ~= 'string' or not string.match(value, '^%d+$') or #value > 15 then
    fail('BAD_REQUEST', what .. ' must be milliseconds since the epoch, got ' .. show(value))
  end
  return tonumber(value)
end

-- `now` from the caller, or Redis' own clock when the caller left it out.
local function clock(value)
  if value == nil or value == '' then
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  local now = check_time(value, 'now')
  if now < 1 then
    fail('BAD_REQUEST', 'now must be after the epoch')
  end
  return now
end

-- How long an instance's history (events, chat) is kept after its
-- scheduled end, ms; 0 (or left out): for ever.
local function check_retention(value)
  if value == nil or value == '' then
    return 0
  end
  return check_time(value, 'retention')
end

-- Let a history key expire `retention` ms after the instance's scheduled
-- end (refreshed at every write, so a moved end moves it too).
local function keep_until(key, inst, retention)
  if retention > 0 then
    redis.call('PEXPIREAT', key, inst.to + retention)
  end
end

-- A page size: 1..PAGE_MAX, PAGE_MAX when left out.
local function check_limit(value)
  if value == nil or value == '' then
    return PAGE_MAX
  end
  if not string.match(value, '^%d+$') or #value > 4 or tonumber(value) < 1
      or tonumber(value) > PAGE_MAX then
    fail('BAD_REQUEST', 'limit must be 1..' .. PAGE_MAX .. ', got ' .. show(value))
  end
  return tonumber(value)
end

-- A stream id cursor (`ms-seq` or `ms`), or nil when left out.
local function check_cursor(value)
  if value == nil or value == '' then
    return nil
  end
  if not (string.match(value, '^%d+%-%d+$') or string.match(value, '^%d+$')) or #value > 41 then
    fail('BAD_REQUEST', 'after must be an id like 1700000000000-0, got ' .. show(value))
  end
  return value
end

-- A name-like text: not empty, at most NAME_MAX bytes, no control
-- characters (tab and newline too, unless `multiline`).
local function check_text(value, what, multiline, allow_empty)
  if type(value) ~= 'string' or (value == '' and not allow_empty) then
    fail('BAD_REQUEST', what .. ' must not be empty')
  end
  if #value > NAME_MAX then
    fail('BAD_REQUEST', what .. ' is longer than ' .. NAME_MAX .. ' bytes')
  end
  local stripped = value
  if multiline then
    stripped = string.gsub(value, '[\t\n]', '')
  end
  if string.find(stripped, '%c') then
    fail('BAD_REQUEST', what .. ' must not contain control characters')
  end
  return value
end

-- An e-mail address, lower-cased (ASCII only, as the daemon does).
local function check_email(value)
  if type(value) ~= 'string' or #value > 254 or not string.match(value, '^[^@%s%c]+@[^@%s%c]+$') then
    fail('BAD_REQUEST', 'email must look like name@domain, got ' .. show(value))
  end
  return string.lower(value)
end

-- The hash tag of a key of the layout (`{p3}`, `{u42}`).
local function tag_of(key)
  return type(key) == 'string' and string.match(key, '^meetingd:({[%w]+}):') or nil
end

-- The name of a key of the layout under `tag`.
local function key(tag, ...)
  return PREFIX .. tag .. ':' .. table.concat({ ... }, ':')
end

-- Check that KEYS is exactly `names`, in order.
local function expect_keys(keys, names)
  if #keys ~= #names then
    fail('BAD_REQUEST', 'expected ' .. #names .. ' keys, got ' .. #keys)
  end
  for i, name in ipairs(names) do
    if keys[i] ~= name then
      fail('BAD_REQUEST', 'KEYS[' .. i .. '] must be ' .. name .. ', got ' .. show(keys[i]))
    end
  end
end

-- The partition tag every key of a call shares, taken from KEYS[1].
local function partition_tag(keys)
  local tag = tag_of(keys[1])
  if not tag or not string.match(tag, '^{p%d+}$') then
    fail('BAD_REQUEST', 'KEYS[1] must be a partition key like meetingd:{p0}:..., got ' .. show(keys[1]))
  end
  return tag
end

local function instance_name(meeting, order)
  return meeting .. '/' .. order
end

--[[ Instances live in their meeting's schedule hash:
       field <order>      "<from>|<to>|<state>"  (state: scheduled, active, ended)
       field <order>#id   the last event/message id handed out ("ms-seq")
       field <order>#end  when it ended (ms): the scheduled end, or the
                          moment of END or of a pre-emption if earlier
]]
local function read_instance(schedule, meeting, order)
  local packed = redis.call('HGET', schedule, order)
  if not packed then
    return nil
  end
  local from, to, state = string.match(packed, '^(%d+)|(%d+)|(%a+)$')
  if not state then
    fail('INTERNAL', 'the schedule entry of ' .. instance_name(meeting, order) .. ' is corrupt: ' .. show(packed))
  end
  return { meeting = meeting, order = order, from = tonumber(from), to = tonumber(to), state = state }
end

local function find_instance(schedule, meeting, order)
  local inst = read_instance(schedule, meeting, order)
  if not inst then
    fail('NOT_FOUND', 'instance ' .. instance_name(meeting, order) .. ' does not exist')
  end
  return inst
end

local function write_instance(schedule, inst)
  redis.call('HSET', schedule, inst.order,
    string.format('%d|%d|%s', inst.from, inst.to, inst.state))
end

-- Active now: activated by the scheduler and its window not yet over (a
-- late tick does not let anybody in after the scheduled end).
local function require_active(inst, now)
  if inst.state ~= 'active' or now >= inst.to then
    fail('INACTIVE', 'instance ' .. instance_name(inst.meeting, inst.order) .. ' is not active')
  end
end

--[[ Ids of events and messages: one sequence per instance, shared by its
event log and its chat, so ids are unique and ordered across both (a
watcher merges the two streams by id). An id is "<ms>-<seq>" with ms = now,
or the last id's ms when the clock went backwards. Hands out `count` ids. ]]
local function take_ids(schedule, order, now, count)
  local field = order .. '#id'
  local last = redis.call('HGET', schedule, field)
  local ms, seq = now, 0
  if last then
    local last_ms, last_seq = string.match(last, '^(%d+)%-(%d+)$')
    last_ms, last_seq = tonumber(last_ms), tonumber(last_seq)
    if last_ms >= now then
      ms, seq = last_ms, last_seq + 1
    end
  end
  local ids = {}
  for i = 0, count - 1 do
    ids[#ids + 1] = string.format('%d-%d', ms, seq + i)
  end
  if count > 0 then
    redis.call('HSET', schedule, field, ids[#ids])
  end
  return ids
end

-- The meeting's active instance order from the partition's active index
-- (member "M/O", score M), or nil.
local function active_order(active_index, meeting)
  local found = redis.call('ZRANGE', active_index, meeting, meeting, 'BYSCORE', 'LIMIT', 0, 1)
  if found[1] then
    return string.match(found[1], '/(%d+)$')
  end
  return nil
end

--[[ End an instance's participation: up to `budget` participants leave with
a timeout event (at = `at`, scheduled end = inst.to, processed = now), in
join order. Returns the users timed out and how many are still in. ]]
local function time_out(schedule, present, events, inst, at, now, budget, retention)
  local users = {}
  if budget > 0 then
    users = redis.call('ZRANGE', present, 0, budget - 1)
  end
  if #users > 0 then
    local ids = take_ids(schedule, inst.order, now, #users)
    for i, user in ipairs(users) do
      redis.call('XADD', events, ids[i], 'u', user, 't', 3, 'at', at, 'end', inst.to, 'proc', now)
    end
    redis.call('ZREM', present, unpack(users))
    keep_until(events, inst, retention)
  end
  return users, redis.call('ZCARD', present)
end

-- When an ended instance ended (its timeouts' `at`).
local function ended_at(schedule, inst)
  return tonumber(redis.call('HGET', schedule, inst.order .. '#end')) or inst.to
end

--[[ Mark an active instance ended at `at` and time out up to `budget`
participants. What remains is drained by later calls (END again, or the
tick: the instance stays due). Returns timed-out users and the rest. ]]
local function end_instance(schedule, present, events, due_index, active_index, inst, at, now, budget,
                            retention)
  local name = instance_name(inst.meeting, inst.order)
  inst.state = 'ended'
  write_instance(schedule, inst)
  redis.call('HSET', schedule, inst.order .. '#end', at)
  redis.call('ZREM', active_index, name)
  local users, remaining = time_out(schedule, present, events, inst, at, now, budget, retention)
  if remaining > 0 then
    redis.call('ZADD', due_index, now, name)
  else
    redis.call('ZREM', due_index, name)
  end
  return users, remaining
end

-- A page of a participants set in join order, after `after` (a user that
-- must still be in it): flat {user, joined_at, ...}.
local function present_page(present, inst, after, limit)
  local start = 0
  if after then
    local rank = redis.call('ZRANK', present, after)
    if not rank then
      fail('NOT_JOINED', 'user ' .. after .. ' is not in ' .. instance_name(inst.meeting, inst.order)
        .. ' (any more); page from the start')
    end
    start = rank + 1
  end
  return redis.call('ZRANGE', present, start, start + limit - 1, 'WITHSCORES')
end

-- A page of a stream after a cursor: {'next', id or false, 'entries', {...}}.
local function stream_page(stream, after, limit)
  local from = '-'
  if after then
    from = '(' .. after
  end
  local entries = redis.call('XRANGE', stream, from, '+', 'COUNT', limit + 1)
  local next_id = false
  if #entries > limit then
    entries[#entries] = nil
    next_id = entries[#entries][1]
  end
  return next_id, entries
end

local function meeting_record(meeting, id)
  local m = redis.call('HMGET', meeting, 'title', 'description', 'public')
  if not m[1] then
    fail('NOT_FOUND', 'meeting ' .. id .. ' does not exist')
  end
  return { 'id', id, 'title', m[1], 'description', m[2], 'public', m[3] }
end
