--[[
meet_ids: a page of one partition's meeting or user ids, in id order.
MEETINGS and USERS ask every partition for a page, merge the pages and
keep the first ids; the cost of a page is its length, whatever is stored.

KEYS[1]  meetingd:{p<P>}:meetings or meetingd:{p<P>}:users
ARGV[1]  after: an id, the last of the previous page (optional)
ARGV[2]  limit: ids, 1..1000 (optional, default 1000)
Returns: {ids, {id...}, next, <the last id, or nil when there are no more>}.
Errors: BAD_REQUEST.
Flags: no-writes.
]]
local function ids(keys, args)
  check_arity(args, 0, 2, '[after[, limit]]')
  index_key(keys[1])
  local after = optional_id(args[1], 'after')
  local limit = check_limit(args[2])
  local min = '-inf'
  if after then
    min = '(' .. after
  end
  local page = redis.call('ZRANGE', keys[1], min, '+inf', 'BYSCORE', 'LIMIT', 0, limit + 1)
  local next_id = false
  if #page > limit then
    page[#page] = nil
    next_id = page[#page]
  end
  return { 'ids', page, 'next', next_id }
end

redis.register_function {
  function_name = 'meet_ids',
  callback = ids,
  flags = { 'no-writes' },
}
