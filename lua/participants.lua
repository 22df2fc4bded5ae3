--[[
meet_participants: who is in an instance now, in join order, a page at a
time. An instance that is not running has nobody in it: by the clock at
`now` (see instances.lua), one past its `to` has nobody, before any call or
tick has ended it, and one whose window opened has nobody yet.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  order id, or '' for the meeting's running instance
ARGV[2]  after: a user id, the last of the previous page (optional, ''
         for the first page); without ARGV[6] the user must still be in
ARGV[3]  limit: 1..1000 (optional, default 1000)
ARGV[4]  shape: 'packed' for the participants in one string (optional)
ARGV[5]  now (ms; optional, Redis TIME when left out or '')
ARGV[6]  after time (ms; optional): with `after`, page from the join
         position (this time, that user), whether or not the user is still
         in (users who joined in the same millisecond are ordered by id as
         strings, as the set orders them)
Returns: {order, <order>, participants, {user, joined_at, ...}}; packed,
  `participants` is one string, 'user joined_at user joined_at ...'.
Errors: BAD_REQUEST, NOT_FOUND (meeting or instance), INACTIVE (no order
  and nothing runs), NOT_JOINED (the `after` user, given without a time,
  is no longer in: page again from the start, or give the time).
Flags: no-writes.
]]
local function participants(keys, args)
  check_arity(args, 1, 6, 'order[, after[, limit[, shape[, now[, after time]]]]]')
  local base, meeting = meeting_key(keys[1])
  local order = args[1]
  if order ~= '' then
    check_id(order, 'order')
  end
  local after = optional_id(args[2], 'after')
  local limit = check_limit(args[3])
  local packed = check_packed(args[4])
  local now = clock(args[5])
  local after_time
  if args[6] and args[6] ~= '' then
    after_time = check_time(args[6], 'after time')
    if not after then
      fail('BAD_REQUEST', 'after time needs an after user')
    end
  end
  local f = redis.call('HMGET', keys[1], 'live', 'preempt')
  local running_order, fresh = running_by_clock(base, meeting, f[1], f[2], now)
  if order == '' then
    if not running_order then
      not_running(keys[1], base, meeting, '')
    end
    order = running_order
  end
  if order ~= running_order or fresh then
    -- not running by the clock, or not started yet: nobody is in it
    order = find_instance(base, meeting, order).order
    return { 'order', order, 'participants', packed and '' or {} }
  end
  local name = instance_name(meeting, order)
  local page = present_page(base .. 'present:' .. name, name, after, limit, after_time)
  return { 'order', order, 'participants', packed and pack_pairs(page) or page }
end

redis.register_function {
  function_name = 'meet_participants',
  callback = participants,
  flags = { 'no-writes' },
}
