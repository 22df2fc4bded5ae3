--[[
pages: reading a list a page at a time, after a cursor.
]]

-- A reply budget in bytes (optional: none when left out or '').
local function check_budget(value)
  if value == nil or value == '' then
    return nil
  end
  return check_count(value, 'budget', 1073741824, nil)
end

-- At most what a stream entry takes in a reply line: its id, its fields,
-- every value escaped at worst to twice its length, and the JSON around.
local function entry_size(entry)
  local size = 64 + #entry[1]
  local fields = entry[2]
  for i = 1, #fields, 2 do
    size = size + #fields[i] + 2 * #fields[i + 1] + 6
  end
  return size
end

-- Keep the first entries of a page that fit in `budget` bytes (at least
-- one): the page, and whether it was cut.
local function within(entries, budget)
  if not budget then
    return entries, false
  end
  local used = 0
  for i, entry in ipairs(entries) do
    used = used + entry_size(entry)
    if used > budget and i > 1 then
      for j = #entries, i, -1 do
        entries[j] = nil
      end
      return entries, true
    end
  end
  return entries, false
end

-- A page of a stream after a cursor ("ms-seq", checked), of at most
-- `limit` entries that fit in `budget` bytes (optional): next (the id to
-- pass as `after` for the following page, false at the end) and entries.
local function stream_page(stream, after, limit, budget)
  local from = '-'
  if after then
    if after == MAX_U64 .. '-' .. MAX_U64 then
      return false, {}
    end
    from = '(' .. after
  end
  local entries = redis.call('XRANGE', stream, from, '+', 'COUNT', limit + 1)
  local more = #entries > limit
  if more then
    entries[#entries] = nil
  end
  local cut
  entries, cut = within(entries, budget)
  local next_id = false
  if more or cut then
    next_id = entries[#entries][1]
  end
  return next_id, entries
end

-- Whether string `a` sorts after `b` byte by byte, as a sorted set orders
-- the members of one score (Lua's own comparison follows the locale).
local function bytes_after(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x > y
    end
  end
  return #a > #b
end

--[[ The rank, in participant set `present`, of the first member after the
join position (`time`, `user`): join time, then user id as a sorted set
orders them (byte by byte). Exact whether or not the user is still in: a
user who left leaves the position as it was. ]]
local function rank_after(present, user, time)
  local score = redis.call('ZSCORE', present, user)
  if score and tonumber(score) == tonumber(time) then
    return redis.call('ZRANK', present, user) + 1
  end
  -- the members joined in that millisecond hold ranks lo..hi-1, by id
  local lo = redis.call('ZCOUNT', present, '-inf', '(' .. time)
  local hi = redis.call('ZCOUNT', present, '-inf', time)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if bytes_after(redis.call('ZRANGE', present, mid, mid)[1], user) then
      hi = mid
    else
      lo = mid + 1
    end
  end
  return lo
end

--[[ A page of a participant set in join order: flat {user, joined_at,
...}, after `after`: a user who must still be in it (no `time`), or with
`time` the join position (time, user), which needs nobody to be in. ]]
local function present_page(present, name, after, limit, time)
  local start = 0
  if after and time then
    start = rank_after(present, after, time)
  elseif after then
    local rank = redis.call('ZRANK', present, after)
    if not rank then
      fail('NOT_JOINED', 'user ' .. after .. ' is not in ' .. name .. ' (any more); page from the start')
    end
    start = rank + 1
  end
  return redis.call('ZRANGE', present, start, start + limit - 1, 'WITHSCORES')
end

-- The reply shape a caller asks for (optional): nil for records (what
-- redis-cli shows well), true for 'packed': a list in one string that a
-- program splits without parsing one reply element per value.
local function check_packed(value)
  if value == nil or value == '' then
    return nil
  end
  if value ~= 'packed' then
    fail('BAD_REQUEST', "shape must be 'packed' or left out, got " .. show(value))
  end
  return true
end

-- A flat {user, joined_at, ...} page packed: 'user joined_at user ...'.
local function pack_pairs(page)
  return table.concat(page, ' ')
end

-- Chat entries packed: per entry 'id user at length text', `at` empty for
-- entries that carry their time only in their id, `length` the bytes of
-- the text, and nothing between one text and the next entry's id.
local function pack_messages(entries)
  local out = {}
  for i, entry in ipairs(entries) do
    local fields = entry[2]
    local user, text, at = '', '', ''
    for j = 1, #fields, 2 do
      local name = fields[j]
      if name == 'u' then
        user = fields[j + 1]
      elseif name == 'text' then
        text = fields[j + 1]
      elseif name == 'at' then
        at = fields[j + 1]
      end
    end
    out[i] = entry[1] .. ' ' .. user .. ' ' .. at .. ' ' .. #text .. ' ' .. text
  end
  return table.concat(out)
end

-- A page of a partition's running instances ("M/O" names of its `active`
-- index, whose scores are the meeting ids), after the meeting id
-- `after_arg` (none: from the first), at most `limit_arg` of them; and the
-- meeting id to go on after when there are more (false when not).
local function running_page(active, after_arg, limit_arg)
  local after = optional_id(after_arg, 'after')
  local limit = check_limit(limit_arg)
  local min = '-inf'
  if after then
    min = '(' .. after
  end
  local names = redis.call('ZRANGE', active, min, '+inf', 'BYSCORE', 'LIMIT', 0, limit + 1)
  local next_meeting = false
  if #names > limit then
    names[#names] = nil
    next_meeting = string.match(names[#names], '^(%d+)/')
  end
  return names, next_meeting
end
