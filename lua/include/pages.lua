--[[
pages: reading a list a page at a time, after a cursor.
]]

-- A page of a stream after a cursor ("ms-seq", checked): next (the id to
-- pass as `after` for the following page, false at the end) and entries.
local function stream_page(stream, after, limit)
  local from = '-'
  if after then
    if after == MAX_U64 .. '-' .. MAX_U64 then
      return false, {}
    end
    from = '(' .. after
  end
  local entries = redis.call('XRANGE', stream, from, '+', 'COUNT', limit + 1)
  local next_id = false
  if #entries > limit then
    entries[#entries] = nil
    next_id = entries[#entries][1]
  end
  return next_id, entries
end

-- A page of a participant set in join order, after `after` (a user that
-- must still be in it): flat {user, joined_at, ...}.
local function present_page(present, name, after, limit)
  local start = 0
  if after then
    local rank = redis.call('ZRANK', present, after)
    if not rank then
      fail('NOT_JOINED', 'user ' .. after .. ' is not in ' .. name .. ' (any more); page from the start')
    end
    start = rank + 1
  end
  return redis.call('ZRANGE', present, start, start + limit - 1, 'WITHSCORES')
end
