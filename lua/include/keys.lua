--[[
keys: the key layout, and the check of the one key every function gets.

Each function takes a single key, KEYS[1], and builds the names of the
other keys it touches from that key's hash tag, so every key of a call
shares one tag (one slot on a Redis Cluster) and redis-cli callers have
one key to get right:
  * meeting functions: meetingd:{p<P>}:meeting:<M>, where P = M mod
    PARTITIONS. A meeting key under any other tag is refused: the daemon
    would never look for it there.
  * partition functions (tick, active, attendance, archived):
    meetingd:{p<P>}:due, meetingd:{p<P>}:active or meetingd:{p<P>}:outbox,
    P < PARTITIONS.
  * user functions: meetingd:{u<U>}:user.
PARTITIONS is set by the line the daemon writes ahead of the library.

Under a partition's tag "meetingd:{p<P>}:" (`base` below):
  meeting:<M>          hash: title, description, public; and `live` while
                       an instance runs, with `preempt` when a scheduled
                       instance of a higher order may open (see
                       instances.lua)
  audience:<M>         sorted set of lower-cased e-mails
  orders:<M>           sorted set of order ids
  upcoming:<M>         sorted set: order -> from, the scheduled instances
                       (see instances.lua)
  schedule:<M>         hash: <O> "from|to|state", <O>#id the last id handed
                       out (while not running), <O>#end when it ended
  present:<M>/<O>      sorted set: user -> join time
  events:<M>/<O>       stream of joins, leaves and timeouts
  chat:<M>/<O>         stream of messages
  chat:<M>/<O>:by:<U>  stream: the ids of one user's messages
  posted:<M>/<O>       hash: "<U>:<key>" -> id, for POST ... ID <key>
  due                  sorted set: "M/O" -> when its next transition is due
  active               sorted set: "M/O" -> M, the running instances
  outbox               stream: what the archiver is to copy into the
                       database (only while archiving; see instances.lua),
                       read through the consumer group `archive`; each
                       entry's id is also published on the channel of the
                       same name, which wakes the archivers
  meetings             sorted set: M -> M, the partition's meetings (MEETINGS)
  users                sorted set: U -> U, the users U with U mod PARTITIONS
                       = P (USERS); the daemon adds a user here before it
                       writes the user's hash (another tag: two calls)
]]

-- Whether the digits `p` of a tag name partition `n` (no leading zero:
-- {p01} is not {p1}).
local function partition_is(p, n)
  return tonumber(p) == n and (#p == 1 or string.byte(p) ~= 48)
end

--[[ Keys already checked, and what they said: a meeting key is checked on
every call, and checking costs more than the rest of a JOIN's reading. The
answer depends on the key alone, so it is kept (up to 10000 keys, then the
memo starts afresh); it lives as long as the loaded library. ]]
local checked_bases, checked_meetings, checked_count = {}, {}, 0

-- A meeting key's partition prefix ("meetingd:{p3}:") and meeting id.
local function meeting_key(key)
  local known = checked_bases[key]
  if known then
    return known, checked_meetings[key]
  end
  local base, p, m = string.match(key or '', '^(meetingd:{p(%d+)}:)meeting:([1-9]%d*)$')
  if m and (#m < 16 or (#m == 16 and m <= MAX_ID)) and partition_is(p, tonumber(m) % PARTITIONS) then
    if checked_count >= 10000 then
      checked_bases, checked_meetings, checked_count = {}, {}, 0
    end
    checked_bases[key], checked_meetings[key], checked_count = base, m, checked_count + 1
    return base, m
  end
  local expected = 'meetingd:{p<M mod ' .. PARTITIONS .. '>}:meeting:<M>'
  if m and #m <= 16 and m <= MAX_ID then
    expected = 'meetingd:{p' .. (tonumber(m) % PARTITIONS) .. '}:meeting:' .. m
  end
  fail('BAD_REQUEST', 'KEYS[1] must be ' .. expected .. ' (' .. PARTITIONS .. ' partitions), got ' .. show(key))
end

-- A partition key (`name`: due or active): its prefix and partition.
local function partition_key(key, name)
  local base, p = string.match(key or '', '^(meetingd:{p(%d+)}:)' .. name .. '$')
  local n = p and #p <= 7 and tonumber(p)
  if not n or n >= PARTITIONS or not partition_is(p, n) then
    fail('BAD_REQUEST', 'KEYS[1] must be meetingd:{p<P>}:' .. name .. ' with P in 0..' .. (PARTITIONS - 1)
      .. ', got ' .. show(key))
  end
  return base, n
end

-- A listing index key (meetingd:{p<P>}:meetings or :users): its prefix,
-- partition and which of the two it is.
local function index_key(key)
  local name = string.match(key or '', '}:(%a+)$')
  if name ~= 'meetings' and name ~= 'users' then
    fail('BAD_REQUEST', 'KEYS[1] must be meetingd:{p<P>}:meetings or meetingd:{p<P>}:users, got '
      .. show(key))
  end
  local base, p = partition_key(key, name)
  return base, p, name
end

-- Whether id `id` (checked) belongs to partition `p`.
local function in_partition(id, p)
  return tonumber(id) % PARTITIONS == p
end

-- A user key's user id.
local function user_key(key)
  local u = string.match(key or '', '^meetingd:{u([1-9]%d*)}:user$')
  if not u or #u > 16 or (#u == 16 and u > MAX_ID) then
    fail('BAD_REQUEST', 'KEYS[1] must be meetingd:{u<user>}:user, got ' .. show(key))
  end
  return u
end

local function instance_name(meeting, order)
  return meeting .. '/' .. order
end
