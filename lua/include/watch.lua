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
        (rest: its text, to the end of the string)
A watcher whose last id is `prev` takes the entry as it is; any other
`prev` (a gap) sends it to the stream, the source of truth.
]]

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
