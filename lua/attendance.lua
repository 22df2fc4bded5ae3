--[[
meet_attendance: for each running instance of one partition, by meeting
id, when each of its participants joined, with the meeting's title; at most
`budget` participants per call. ATTENDANCE asks every partition, and again
from `next` while a partition has more. Running means running by the
clock at `now`, as for meet_active (an instance whose window opened and
that wins has a row with nobody in it yet; one past its `to` has none).

KEYS[1]  meetingd:{p<P>}:active
ARGV[1]  after meeting: the meeting of `next` (optional: from the start)
ARGV[2]  after user: the user of `next` ('' to start after the meeting)
ARGV[3]  after time: the join time of that user (ms; with a user)
ARGV[4]  budget: participants, 1..1000 (optional, default 1000)
ARGV[5]  shape: 'packed' for each row's participants in one string
         (optional)
ARGV[6]  now (ms; optional, Redis TIME when left out or '')
Returns: {rows, {{meeting, order, title, {user, joined_at, ...}}...}, next,
  <{meeting, user, joined_at} or nil>}; packed, a row's participants are
  one string, 'user joined_at user joined_at ...'. An instance split over two calls
  has a row in each: the second goes on after the first's last user. A
  user who left between the calls is passed by time: users who joined in
  the same millisecond may then show twice.
Errors: BAD_REQUEST.
Flags: no-writes.
]]
local function attendance(keys, args)
  check_arity(args, 0, 6, '[after meeting[, after user[, after time[, budget[, shape[, now]]]]]]')
  local base = partition_key(keys[1], 'active')
  local after_meeting = optional_id(args[1], 'after meeting')
  local after_user = optional_id(args[2], 'after user')
  local after_time
  if after_user then
    after_time = check_time(args[3], 'after time')
  end
  local budget = check_limit(args[4])
  local packed = check_packed(args[5])
  local now = clock(args[6])
  local meetings, more = clock_meetings(base, after_meeting, after_user ~= nil, budget, now)
  local rows, next_cursor = {}, false
  local done_meeting
  for _, meeting in ipairs(meetings) do
    if budget == 0 then
      -- more instances: go on after the last one listed
      next_cursor = { done_meeting, '', '' }
      break
    end
    local f = redis.call('HMGET', base .. 'meeting:' .. meeting, 'title', 'live', 'preempt')
    local order, fresh = running_by_clock(base, meeting, f[2], f[3], now)
    if order then
      local name = instance_name(meeting, order)
      local page = {}
      if not fresh then
        local present = base .. 'present:' .. name
        local start = 0
        if after_user and meeting == after_meeting then
          local rank = redis.call('ZRANK', present, after_user)
          if rank then
            start = rank + 1
          else
            start = redis.call('ZCOUNT', present, '-inf', '(' .. after_time)
          end
        end
        page = redis.call('ZRANGE', present, start, start + budget, 'WITHSCORES')
      end
      local cut = #page > 2 * budget
      if cut then
        page[#page] = nil
        page[#page] = nil
      end
      rows[#rows + 1] = { meeting, order, f[1] or '', packed and pack_pairs(page) or page }
      budget = budget - #page / 2
      if cut then
        next_cursor = { meeting, page[#page - 1], page[#page] }
        break
      end
    end
    done_meeting = meeting
  end
  if not next_cursor and more then
    next_cursor = { meetings[#meetings], '', '' }
  end
  return { 'rows', rows, 'next', next_cursor }
end

redis.register_function {
  function_name = 'meet_attendance',
  callback = attendance,
  flags = { 'no-writes' },
}
