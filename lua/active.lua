--[[
meet_active: the running instances of one partition, by meeting id, with
their meetings' details and head counts, a page at a time. ACTIVE asks
the partitions that may hold one (the daemon keeps their answers while
they hold: see docs/internals.md, "How ACTIVE and ATTENDANCE read").

Running means running by the clock at `now` (see instances.lua): an
instance past its `to` is not listed, one whose window opened and that
wins the overlap rule is (with 0 participants), whether or not a call or
the tick applied it yet. A page may hold fewer rows than `limit` and still
have a `next` (meetings looked at that run nothing).

KEYS[1]  meetingd:{p<P>}:active; the caller may declare more keys of the
         partition (a cache tracks what a call declares): they are not
         read for that
ARGV[1]  after: a meeting id, the `next` of the previous page (optional)
ARGV[2]  limit: meetings looked at, 1..1000 (optional, default 1000)
ARGV[3]  now (ms; optional, Redis TIME when left out or '')
Returns: {next, <meeting id or nil>, rows, {{meeting, order, title,
  description, public, from, to, participants}...}, until, <ms or nil>,
  meetings, {meeting...}, seen, <id>}:
  until    while the clock is before it (and at or after `now`), the same
           call answers the same unless a key it read changes (nil: for
           ever)
  meetings the meetings looked at: the call read their hash, schedule,
           upcoming index, and the participant set of each row's instance,
           besides the partition's active and due indexes and its log of
           transitions
  seen     the last id of the partition's log of transitions (see
           watch.lua) when the call ran ('0-0': none)
Errors: BAD_REQUEST.
Flags: no-writes.
]]
local function active(keys, args)
  check_arity(args, 0, 3, '[after[, limit[, now]]]')
  local base = partition_key(keys[1], 'active')
  local after = optional_id(args[1], 'after')
  local limit = check_limit(args[2])
  local now = clock(args[3])
  local meetings, more = clock_meetings(base, after, false, limit, now)
  local rows, ends = {}, false
  for _, meeting in ipairs(meetings) do
    local m = redis.call('HMGET', base .. 'meeting:' .. meeting, 'title', 'description', 'public', 'live', 'preempt')
    local order, fresh, inst = running_by_clock(base, meeting, m[4], m[5], now)
    if order and not fresh then
      inst = load_instance(base, meeting, order)
    end
    if inst then
      rows[#rows + 1] = {
        meeting, order, m[1] or '', m[2] or '', m[3] or 'false', inst.from, inst.to,
        fresh and 0 or redis.call('ZCARD', inst.present),
      }
      ends = earliest(ends, inst.to)
    end
  end
  return {
    'next', more and meetings[#meetings], 'rows', rows, 'until', valid_until(base, now, ends),
    'meetings', meetings, 'seen', last_entry_id(base .. 'transitions'),
  }
end

redis.register_function {
  function_name = 'meet_active',
  callback = active,
  flags = { 'no-writes' },
}
