--[[
meet_events: an instance's event log in order, a page at a time.

Each event is a stream entry whose fields are u (user), t (1 join, 2 leave,
3 timeout) and at (ms); a timeout also has end (the scheduled end) and proc
(when it was processed).

KEYS[1]  meetingd:{p<P>}:schedule:<meeting>
KEYS[2]  meetingd:{p<P>}:events:<meeting>/<order>
ARGV[1]  meeting id
ARGV[2]  order id
ARGV[3]  after: an event id, the `next` of the previous page (optional)
ARGV[4]  limit: 1..1000 (optional, default 1000)
Returns: {next, id or nil, events, {{id, {u, user, t, type, at, ms...}}...}}.
Errors: BAD_REQUEST, NOT_FOUND (instance).
Flags: no-writes.
]]
local function events(keys, args)
  check_arity(args, 2, 4, 'meeting, order[, after[, limit]]')
  local tag = partition_tag(keys)
  local meeting = check_id(args[1], 'meeting')
  local order = check_id(args[2], 'order')
  expect_keys(keys, { key(tag, 'schedule', meeting), key(tag, 'events', instance_name(meeting, order)) })
  local after = check_cursor(args[3])
  local limit = check_limit(args[4])
  find_instance(keys[1], meeting, order)
  local next_id, entries = stream_page(keys[2], after, limit)
  return { 'next', next_id, 'events', entries }
end

redis.register_function {
  function_name = 'meet_events',
  callback = guard(events),
  flags = { 'no-writes' },
}
