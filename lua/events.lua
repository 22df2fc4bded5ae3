--[[
meet_events: an instance's event log in order, a page at a time.

Each event is a stream entry with fields u (user) and t (1 join, 2 leave,
3 timeout); its time is its id's first part. A timeout also has at (its
time: the scheduled end, or when the instance was ended by hand) and end
(the scheduled end); its id's first part is when it was processed.
(Entries written before version 0.2 carry `at` on every event, and `proc`
on timeouts.)

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  order id, or '' for the meeting's running instance
ARGV[2]  after: an event id, the `next` of the previous page (optional)
ARGV[3]  limit: 1..1000 (optional, default 1000)
ARGV[4]  budget: the most bytes the page may take in a reply (optional;
         at least one event is returned): a page cut short has `next`
ARGV[5]  now (ms; optional, Redis TIME when left out or ''): with no order, the
         instance running by the clock (see meet_current)
Returns: {order, <order>, next, <id or nil>, events,
  {{id, {u, <user>, t, <type>...}}...}}.
Errors: BAD_REQUEST, NOT_FOUND (meeting or instance), INACTIVE (no order
  and nothing runs).
Flags: no-writes.
]]
local function events(keys, args)
  check_arity(args, 1, 5, 'order[, after[, limit[, budget[, now]]]]')
  local base, meeting = meeting_key(keys[1])
  optional_id(args[1], 'order')
  local after = check_cursor(args[2])
  local limit = check_limit(args[3])
  local budget = check_budget(args[4])
  local inst = find_by_clock(base, meeting, args[1], clock(args[5]))
  local next_id, entries = stream_page(inst.events, after, limit, budget)
  return { 'order', inst.order, 'next', next_id, 'events', entries }
end

redis.register_function {
  function_name = 'meet_events',
  callback = events,
  flags = { 'no-writes' },
}
