--[[
meet_attendance: for each running instance of one partition, by meeting
id, when each of its participants joined, with the meeting's title; at most
`budget` participants per call. ATTENDANCE asks every partition, and again
from `next` while a partition has more.

KEYS[1]  meetingd:{p<P>}:active
ARGV[1]  after meeting: the meeting of `next` (optional: from the start)
ARGV[2]  after user: the user of `next` ('' to start after the meeting)
ARGV[3]  after time: the join time of that user (ms; with a user)
ARGV[4]  budget: participants, 1..1000 (optional, default 1000)
ARGV[5]  shape: 'packed' for each row's participants in one string
         (optional)
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
  check_arity(args, 0, 5, '[after meeting[, after user[, after time[, budget[, shape]]]]]')
  local base = partition_key(keys[1], 'active')
  local after_meeting = optional_id(args[1], 'after meeting')
  local after_user = optional_id(args[2], 'after user')
  local after_time
  if after_user then
    after_time = check_time(args[3], 'after time')
  end
  local budget = check_limit(args[4])
  local packed = check_packed(args[5])
  local min = '-inf'
  if after_meeting then
    min = '(' .. after_meeting
    if after_user then
      min = after_meeting
    end
  end
  local limit = budget
  local names = redis.call('ZRANGE', keys[1], min, '+inf', 'BYSCORE', 'LIMIT', 0, limit + 1)
  local rows, next_cursor = {}, false
  for i, name in ipairs(names) do
    if i > limit or budget == 0 then
      -- more instances: go on after the last one listed
      next_cursor = { rows[#rows][1], '', '' }
      break
    end
    local meeting, order = string.match(name, '^(%d+)/(%d+)$')
    local present = base .. 'present:' .. name
    local start = 0
    if i == 1 and after_user and meeting == after_meeting then
      local rank = redis.call('ZRANK', present, after_user)
      if rank then
        start = rank + 1
      else
        start = redis.call('ZCOUNT', present, '-inf', '(' .. after_time)
      end
    end
    local page = redis.call('ZRANGE', present, start, start + budget, 'WITHSCORES')
    local more = #page > 2 * budget
    if more then
      page[#page] = nil
      page[#page] = nil
    end
    local title = redis.call('HGET', base .. 'meeting:' .. meeting, 'title') or ''
    rows[#rows + 1] = { meeting, order, title, packed and pack_pairs(page) or page }
    budget = budget - #page / 2
    if more then
      next_cursor = { meeting, page[#page - 1], page[#page] }
      break
    end
  end
  return { 'rows', rows, 'next', next_cursor }
end

redis.register_function {
  function_name = 'meet_attendance',
  callback = attendance,
  flags = { 'no-writes' },
}
