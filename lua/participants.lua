--[[
meet_participants: who is in an instance now, in join order, a page at a
time. An instance that is not running has nobody in it.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  order id, or '' for the meeting's running instance
ARGV[2]  after: a user id, the last of the previous page (optional, ''
         for the first page)
ARGV[3]  limit: 1..1000 (optional, default 1000)
ARGV[4]  shape: 'packed' for the participants in one string (optional)
Returns: {order, <order>, participants, {user, joined_at, ...}}; packed,
  `participants` is one string, 'user joined_at user joined_at ...'.
Errors: BAD_REQUEST, NOT_FOUND (meeting or instance), INACTIVE (no order
  and nothing runs), NOT_JOINED (the `after` user is no longer in: page
  again from the start).
Flags: no-writes.
]]
local function participants(keys, args)
  check_arity(args, 1, 4, 'order[, after[, limit[, shape]]]')
  local base, meeting = meeting_key(keys[1])
  local order = args[1]
  if order ~= '' then
    check_id(order, 'order')
  end
  local after = optional_id(args[2], 'after')
  local limit = check_limit(args[3])
  local packed = check_packed(args[4])
  local running_order = parse_live(redis.call('HGET', keys[1], 'live'))
  if order == '' and running_order then
    order = running_order
  end
  if order ~= running_order then
    local inst = find_instance(base, meeting, order)
    order = inst.order
    if inst.state ~= 'active' then
      return { 'order', order, 'participants', packed and '' or {} }
    end
  end
  local name = instance_name(meeting, order)
  local page = present_page(base .. 'present:' .. name, name, after, limit)
  return { 'order', order, 'participants', packed and pack_pairs(page) or page }
end

redis.register_function {
  function_name = 'meet_participants',
  callback = participants,
  flags = { 'no-writes' },
}
