--[[
watch: what an instance's watchers are told, inside the call that writes
it. Every entry XADDed to an instance's event log or chat is published on
the instance's channel, `meetingd:{p<P>}:watch:<M>/<O>`: the partition's
tag routes it to the shard that holds the instance (SPUBLISH, sharded
pub/sub, which a single Redis 7 serves as well), so one path does for both.

The message is one string, `<prev> <id> <kind> <user>[ <rest>]`:
  prev  the id handed out before this one ('0-0' before the first), or
        '-' when the caller does not know it: the daemon then reads the
        stream to be sure it missed nothing
  kind  1 join, 2 leave, 3 timeout (rest: "<at> <end>"), m a message
        (rest: its text, to the end of the string), 4 the instance
        started (user '-', rest: "<at>"), 5 it ended (user '-', rest:
        "<at> <end> <why>")
A watcher whose last id is `prev` takes the entry as it is; any other
`prev` (a gap) sends it to the stream, the source of truth.

Starts and ends are also written to the partition's log of transitions,
`meetingd:{p<P>}:transitions` (a stream whose ids are "<ms>-<seq>" with
ms = max(now, the last id's ms), as an instance's are; the last
TRANSITIONS_KEPT or so kept), and published on the partition's channel
`meetingd:{p<P>}:watch:active` as `<prev> <id> <kind> <M>/<O> <at> <from>
<to>[ <why>]`: WATCH ACTIVE follows every partition's channel, and fills a
gap from the log as WATCH does from an instance's streams.
]]

-- About how many starts and ends a partition's log of transitions keeps
-- (XADD MAXLEN ~): what a subscriber reconnecting after a gap reads back.
local TRANSITIONS_KEPT = 10000

-- The previous id of an instance's sequence as it stood before next_id:
-- (ms, seq) of the live field or the schedule, seq '' when none yet.
local function prev_id(ms, seq)
  if seq == '' or seq == nil then
    return '0-0'
  end
  return ms .. '-' .. seq
end

-- Publish an entry just written to instance `name` under `base`.
local function announce(base, name, prev, id, kind, user, rest)
  local message = (prev or '-') .. ' ' .. id .. ' ' .. kind .. ' ' .. user
  if rest then
    message = message .. ' ' .. rest
  end
  redis.call('SPUBLISH', base .. 'watch:' .. name, message)
end

-- The last id of a stream ('0-0' when it is empty or missing).
local function last_entry_id(stream)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  return last and last[1] or '0-0'
end

--[[ Log and publish a start (kind '4') or an end ('5', with `why`) of
instance `meeting`/`order` (window from..to) of the partition under
`base`, which happened at `at` by the clock (see instances.lua), written
at `now`. ]]
local function announce_transition(base, meeting, order, from, to, kind, at, why, now)
  local stream = base .. 'transitions'
  local prev = last_entry_id(stream)
  local ms, seq = string.match(prev, '^(%d+)%-(%d+)$')
  if later(now, ms) then
    ms, seq = now, '0'
  else
    seq = tostring(seq + 1)
  end
  local id = ms .. '-' .. seq
  if why then
    redis.call('XADD', stream, 'MAXLEN', '~', TRANSITIONS_KEPT, id, 't', kind, 'm', meeting, 'o', order,
      'at', at, 'from', from, 'to', to, 'why', why)
  else
    redis.call('XADD', stream, 'MAXLEN', '~', TRANSITIONS_KEPT, id, 't', kind, 'm', meeting, 'o', order,
      'at', at, 'from', from, 'to', to)
  end
  local message = prev .. ' ' .. id .. ' ' .. kind .. ' ' .. meeting .. '/' .. order .. ' ' .. at .. ' '
    .. from .. ' ' .. to
  if why then
    message = message .. ' ' .. why
  end
  redis.call('SPUBLISH', base .. 'watch:active', message)
end
