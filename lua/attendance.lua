--[[
meet_attendance: for each running instance of one partition, by meeting
id, when each of its participants joined, with the meeting's title; at most
`budget` participants per call. ATTENDANCE asks the partitions that may
hold a running instance, and again from `next` while a partition has
more. Running means running by the clock at `now`, as for meet_active (an
instance whose window opened and that wins has a row with nobody in it
yet; one past its `to` has none).

KEYS[1]  meetingd:{p<P>}:active (more keys of the partition may be
         declared, as for meet_active)
ARGV[1]  after meeting: the meeting of `next` (optional: from the start)
ARGV[2]  after order: the instance of `next` ('' to start after the
         meeting's row)
ARGV[3]  after user, ARGV[4] after time: with the order, the join position
         (time, user) to go on after in that instance, whether or not that
         user is still in ('' for the start of the instance); an instance
         of the meeting other than `after order` is listed from its start
ARGV[5]  budget: participants, 1..1000 (optional, default 1000)
ARGV[6]  shape: 'packed' for each row's participants in one string
         (optional)
ARGV[7]  now (ms; optional, Redis TIME when left out or '')
Returns: {rows, {{meeting, order, title, {user, joined_at, ...}}...}, next,
  <{meeting, order, user, joined_at} or nil>, until, <ms or nil>, meetings,
  {meeting...}}; packed, a row's participants are one string, 'user
  joined_at user joined_at ...'. An instance split over two calls has a row
  in each: the second goes on after the first's last user (`next`; order,
  user and time '' to go on after the meeting). `until` and `meetings` as
  meet_active's.
Errors: BAD_REQUEST.
Flags: no-writes.
]]
local function attendance(keys, args)
  check_arity(args, 0, 7,
    '[after meeting[, after order[, after user[, after time[, budget[, shape[, now]]]]]]]')
  local base = partition_key(keys[1], 'active')
  local after_meeting = optional_id(args[1], 'after meeting')
  local after_order = optional_id(args[2], 'after order')
  local after_user = optional_id(args[3], 'after user')
  local after_time
  if after_user then
    after_time = check_time(args[4], 'after time')
  end
  if (after_order and not after_meeting) or (after_user and not after_order) then
    fail('BAD_REQUEST', 'after user needs an after order, and after order an after meeting')
  end
  local budget = check_limit(args[5])
  local packed = check_packed(args[6])
  local now = clock(args[7])
  local meetings, more = clock_meetings(base, after_meeting, after_order ~= nil, budget, now)
  local rows, next_cursor, ends = {}, false, false
  local done_meeting
  for _, meeting in ipairs(meetings) do
    if budget == 0 then
      -- more instances: go on after the last one listed
      next_cursor = { done_meeting, '', '', '' }
      break
    end
    local f = redis.call('HMGET', base .. 'meeting:' .. meeting, 'title', 'live', 'preempt')
    local order, fresh, inst = running_by_clock(base, meeting, f[2], f[3], now)
    if order then
      if not inst then
        inst = load_instance(base, meeting, order)
      end
      local page = {}
      if not fresh then
        local start = 0
        if after_order and meeting == after_meeting and order == after_order then
          start = after_user and rank_after(inst.present, after_user, after_time) or 0
        end
        page = redis.call('ZRANGE', inst.present, start, start + budget, 'WITHSCORES')
      end
      local cut = #page > 2 * budget
      if cut then
        page[#page] = nil
        page[#page] = nil
      end
      ends = earliest(ends, inst.to)
      rows[#rows + 1] = { meeting, order, f[1] or '', packed and pack_pairs(page) or page }
      budget = budget - #page / 2
      if cut then
        next_cursor = { meeting, order, page[#page - 1], page[#page] }
        break
      end
    end
    done_meeting = meeting
  end
  if not next_cursor and more then
    next_cursor = { meetings[#meetings], '', '', '' }
  end
  return {
    'rows', rows, 'next', next_cursor, 'until', valid_until(base, now, ends), 'meetings', meetings,
  }
end

redis.register_function {
  function_name = 'meet_attendance',
  callback = attendance,
  flags = { 'no-writes' },
}
