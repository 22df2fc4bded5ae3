--[[
meet_archived: the archiver has copied an outbox entry into the database
(and committed): acknowledge it, delete it, and give the history it copied
the expiry it was kept from while waiting (see `archiving` in
instances.lua).

An ended instance's history may have many posters, each with an index of
their own: the archiver passes them a page at a time, with '' as the entry
id, and acknowledges in the last call. Every step can be repeated.

KEYS[1]  meetingd:{p<P>}:outbox
ARGV[1]  the outbox entry's id, or '' to acknowledge nothing yet
ARGV[2]  retention (ms; '' or 0: the history is kept for ever)
ARGV[3]  meeting, or '' (optional: the instance whose history expires)
ARGV[4]  order (with a meeting)
ARGV[5..] users whose message index in the instance expires too
Returns: the number of entries acknowledged (0 or 1).
Errors: BAD_REQUEST.
]]
local function archived(keys, args)
  local base = partition_key(keys[1], 'outbox')
  local id = args[1] or ''
  local retention = check_retention(args[2])
  local meeting = args[3] or ''
  if meeting ~= '' and retention > 0 then
    check_id(meeting, 'meeting')
    local order = check_id(args[4], 'order')
    local inst = load_instance(base, meeting, order)
    if inst then
      local at = tonumber(inst.to) + retention
      local chat = base .. 'chat:' .. inst.name
      redis.call('PEXPIREAT', inst.events, at)
      redis.call('PEXPIREAT', chat, at)
      redis.call('PEXPIREAT', base .. 'posted:' .. inst.name, at)
      for i = 5, #args do
        redis.call('PEXPIREAT', chat .. ':by:' .. check_id(args[i], 'user'), at)
      end
    end
  end
  if id == '' then
    return 0
  end
  if not string.find(id, '^%d+%-%d+$') then
    fail('BAD_REQUEST', 'ARGV[1] must be an entry id, got ' .. show(id))
  end
  local acked = redis.call('XACK', keys[1], 'archive', id)
  redis.call('XDEL', keys[1], id)
  return acked
end

redis.register_function('meet_archived', archived)

--[[
meet_archive_enqueue: queue an instance that ended before archiving was on
(or whose archive is in doubt) for the archiver: its meeting as it is now
and its end go to the partition's outbox, as if it had just ended. Used by
`meetingd archive --backfill`; archiving twice writes nothing twice.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  order id
Returns: 1 when queued, 0 when not (not ended, participants still timing
  out, or the partition does not archive).
Errors: BAD_REQUEST, NOT_FOUND (meeting or instance).
]]
local function archive_enqueue(keys, args)
  check_arity(args, 1, 1, 'order')
  local base, meeting = meeting_key(keys[1])
  local inst = find_instance(base, meeting, check_id(args[1], 'order'))
  if inst.state ~= 'ended' or redis.call('ZCARD', inst.present) > 0 or not archiving(base) then
    return 0
  end
  local m = redis.call('HMGET', keys[1], 'title', 'description', 'public')
  if m[1] then
    outbox_add(base, 'k', 'meeting', 'm', meeting, 'title', m[1], 'description', m[2] or '',
      'public', m[3] or 'false')
  end
  outbox_ended(inst)
  return 1
end

redis.register_function('meet_archive_enqueue', archive_enqueue)
