--[[
meet_feed: an instance's event log and chat merged into one list in id
order, a page at a time: what WATCH streams. Both streams take their ids
from the instance's one sequence, so the merge is the order in which things
happened.

KEYS[1]  meetingd:{p<P>}:schedule:<meeting>
KEYS[2]  meetingd:{p<P>}:events:<meeting>/<order>
KEYS[3]  meetingd:{p<P>}:chat:<meeting>/<order>
ARGV[1]  meeting id
ARGV[2]  order id
ARGV[3]  after: an id; only entries after it (optional, default: from the
         start)
ARGV[4]  limit: 1..1000 (optional, default 1000)
Returns: {last, id, next, id or nil, entries, {{id, {field, value...}}...}}
  `last` is the last id the instance handed out ("0-0" when none): a
  watcher starting now wants what comes after it. An entry with a field `t`
  is an event (u, t, at[, end, proc]); one with `text` is a message
  (u, text, at). `next` is the id to pass as `after` for the following
  page, nil at the end.
Errors: BAD_REQUEST, NOT_FOUND (instance).
Flags: no-writes.
]]

-- The two numbers of an id "ms-seq" (a bare "ms" is "ms-0").
local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)%-?(%d*)$')
  return tonumber(ms), tonumber(seq) or 0
end

local function id_before(a, b)
  local a_ms, a_seq = id_parts(a)
  local b_ms, b_seq = id_parts(b)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end

local function feed(keys, args)
  check_arity(args, 2, 4, 'meeting, order[, after[, limit]]')
  local tag = partition_tag(keys)
  local meeting = check_id(args[1], 'meeting')
  local order = check_id(args[2], 'order')
  local name = instance_name(meeting, order)
  expect_keys(keys, { key(tag, 'schedule', meeting), key(tag, 'events', name), key(tag, 'chat', name) })
  local after = check_cursor(args[3])
  local limit = check_limit(args[4])
  find_instance(keys[1], meeting, order)
  local last = redis.call('HGET', keys[1], order .. '#id') or '0-0'
  -- a page of each is enough to fill the merged page
  local events_more, events = stream_page(keys[2], after, limit)
  local chat_more, chat = stream_page(keys[3], after, limit)
  local more = events_more or chat_more
  local entries = {}
  local e, c = 1, 1
  while #entries < limit and (events[e] or chat[c]) do
    if chat[c] == nil or (events[e] and id_before(events[e][1], chat[c][1])) then
      entries[#entries + 1] = events[e]
      e = e + 1
    else
      entries[#entries + 1] = chat[c]
      c = c + 1
    end
  end
  local next_id = false
  if #entries == limit and (more or events[e] or chat[c]) then
    next_id = entries[#entries][1]
  end
  return { 'last', last, 'next', next_id, 'entries', entries }
end

redis.register_function {
  function_name = 'meet_feed',
  callback = guard(feed),
  flags = { 'no-writes' },
}
