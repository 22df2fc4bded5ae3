--[[
meet_transitions: a partition's log of starts and ends (see watch.lua), a
page at a time: what WATCH ACTIVE reads when it fills a gap in what it
was published.

Each entry has t (4 a start, 5 an end), m and o (the instance), at (when
it happened by the clock), from and to (its window), and an end's why
(scheduled, preempted, ended, missed). An id's first part is when it was
written (the caller's now, never before the last id's); the log
keeps about the last 10,000 entries of its partition.

KEYS[1]  meetingd:{p<P>}:transitions
ARGV[1]  after: an id; only entries after it (optional, default: from the
         start)
ARGV[2]  limit: 1..1000 (optional, default 1000)
Returns: {last, <id>, next, <id or nil>, entries, {{id, {field, value...}}...}}
  `last` is the log's last id ('0-0' when empty): a watcher starting now
  wants what comes after it; `next` the id to pass as `after` for the
  following page, nil at the end.
Errors: BAD_REQUEST.
Flags: no-writes.
]]
local function transitions(keys, args)
  check_arity(args, 0, 2, '[after[, limit]]')
  partition_key(keys[1], 'transitions')
  local after = check_cursor(args[1])
  local limit = check_limit(args[2])
  local next_id, entries = stream_page(keys[1], after, limit)
  return { 'last', last_entry_id(keys[1]), 'next', next_id, 'entries', entries }
end

redis.register_function {
  function_name = 'meet_transitions',
  callback = transitions,
  flags = { 'no-writes' },
}
