--[[
meet_feed: an instance's event log and chat merged into one list in id
order, a page at a time: what WATCH streams. Both streams take their ids
from the instance's one sequence, so the merge is the order in which things
happened.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  order id
ARGV[2]  after: an id; only entries after it (optional, default: from the
         start)
ARGV[3]  limit: 1..1000 (optional, default 1000)
Returns: {last, <id>, next, <id or nil>, entries, {{id, {field, value...}}...}}
  `last` is the last id the instance handed out ("0-0" when none): a
  watcher starting now wants what comes after it. An entry with a field `t`
  is an event (see meet_events); one with `text` is a message. `next` is
  the id to pass as `after` for the following page, nil at the end.
Errors: BAD_REQUEST, NOT_FOUND (meeting or instance).
Flags: no-writes.
]]

-- Whether stream id a ("ms-seq") comes before b. The parts go up to 2^64-1,
-- beyond a Lua number's exact range: they compare as digit strings.
local function id_before(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)%-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)%-(%d+)$')
  if a_ms ~= b_ms then
    return later(b_ms, a_ms)
  end
  return later(b_seq, a_seq)
end

local function feed(keys, args)
  check_arity(args, 1, 3, 'order[, after[, limit]]')
  local base, meeting = meeting_key(keys[1])
  local order = check_id(args[1], 'order')
  local after = check_cursor(args[2])
  local limit = check_limit(args[3])
  local inst = find_instance(base, meeting, order)
  -- a page of each is enough to fill the merged page
  local events_more, events = stream_page(inst.events, after, limit)
  local chat_more, chat = stream_page(base .. 'chat:' .. inst.name, after, limit)
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
  return { 'last', last_cursor(inst), 'next', next_id, 'entries', entries }
end

redis.register_function {
  function_name = 'meet_feed',
  callback = feed,
  flags = { 'no-writes' },
}
