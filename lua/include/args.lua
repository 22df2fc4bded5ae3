--[[
args: checks of ARGV values. Ids and times stay strings (as they arrive):
ids go up to 2^53-1 and are never used in arithmetic, and times compare as
strings of digits (same length, no leading zero), so the hot paths never
convert them to numbers and back.
]]

local MAX_ID = '9007199254740991'
local MAX_U64 = '18446744073709551615'
local PAGE_MAX = 1000
local TEXT_MAX = 65536
local NAME_MAX = 1024
-- The last millisecond a reply can write in RFC 3339 (four-digit years):
-- 9999-12-31T23:59:59.999Z.
local TIME_MAX = '253402300799999'

-- Ids already checked (see keys.lua's memo of meeting keys: the same, for
-- the user ids of the hot calls).
local valid_ids, valid_count = {}, 0

-- A positive integer up to 2^53-1, kept as its digit string.
local function check_id(value, what)
  if valid_ids[value] then
    return value
  end
  if not string.find(value or '', '^[1-9]%d*$') or #value > 16 or (#value == 16 and value > MAX_ID) then
    fail('BAD_REQUEST', what .. ' must be a positive integer up to 2^53-1, got ' .. show(value))
  end
  if valid_count >= 10000 then
    valid_ids, valid_count = {}, 0
  end
  valid_ids[value], valid_count = true, valid_count + 1
  return value
end

-- An optional id: nil when left out or ''.
local function optional_id(value, what)
  if value == nil or value == '' then
    return nil
  end
  return check_id(value, what)
end

-- Whether digit string `a` is after digit string `b` (no leading zeros).
local function later(a, b)
  return #a > #b or (#a == #b and a > b)
end

-- Up to 15 decimal digits, no leading zero: a count of milliseconds.
local function is_millis(value)
  return string.find(value or '', '^%d+$') and #value <= 15 and (#value == 1 or string.byte(value) ~= 48)
end

-- An instant, ms since the epoch, as a digit string (no leading zero), no
-- later than TIME_MAX, so every time stored reads back as RFC 3339.
local function check_time(value, what)
  if not is_millis(value) or later(value, TIME_MAX) then
    fail('BAD_REQUEST', what .. ' must be milliseconds since the epoch up to ' .. TIME_MAX
      .. ' (9999-12-31T23:59:59.999Z), got ' .. show(value))
  end
  return value
end

-- The last `now` clock() accepted: under load many calls in a row carry
-- the same millisecond, and a string known good needs no second look.
local last_now = false

-- `now` from the caller, or Redis' own clock when the caller left it out.
-- The common case (13 digits, 2001-09-09 to 2286-11-20) is one match.
local function clock(value)
  if value == last_now then
    return value
  end
  if #(value or '') == 13 and string.find(value, '^[1-9]%d+$') then
    last_now = value
    return value
  end
  if value == nil or value == '' then
    local t = redis.call('TIME')
    return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
  end
  if value == '0' then
    fail('BAD_REQUEST', 'now must be milliseconds since the epoch (after it), got ' .. show(value))
  end
  return check_time(value, 'now')
end

-- How long an instance's history (events, chat) is kept after its
-- scheduled end, ms; 0 (or left out): for ever.
local function check_retention(value)
  if value == nil or value == '' or value == '0' then
    return 0
  end
  if not is_millis(value) then
    fail('BAD_REQUEST', 'retention must be milliseconds (at most 15 digits), got ' .. show(value))
  end
  return tonumber(value)
end

-- A count 1..max, `default` when left out.
local function check_count(value, what, max, default)
  if value == nil or value == '' then
    return default
  end
  if not string.find(value, '^[1-9]%d*$') or #value > #tostring(max) or tonumber(value) > max then
    fail('BAD_REQUEST', what .. ' must be 1..' .. max .. ', got ' .. show(value))
  end
  return tonumber(value)
end

-- A page size: 1..PAGE_MAX, PAGE_MAX when left out.
local function check_limit(value)
  return check_count(value, 'limit', PAGE_MAX, PAGE_MAX)
end

-- A part of a stream id: digits, at most 2^64-1 (Redis' own bound).
local function u64_part(part)
  return string.find(part, '^%d+$') and (#part < 20 or (#part == 20 and part <= MAX_U64))
end

-- A stream id cursor (`ms-seq` or `ms`, each part at most 2^64-1) as
-- `ms-seq`, or nil when left out.
local function check_cursor(value)
  if value == nil or value == '' then
    return nil
  end
  local ms, seq = string.match(value, '^(%d+)%-(%d+)$')
  if not ms then
    ms, seq = value, '0'
  end
  if not (u64_part(ms) and u64_part(seq)) then
    fail('BAD_REQUEST', 'after must be an id like 1700000000000-0 (each part at most 2^64-1), got '
      .. show(value))
  end
  return ms .. '-' .. seq
end

-- Text a JSON reply can carry as it is: well-formed UTF-8, and none of
-- the C1 control characters (U+0080..U+009F), which the daemon refuses as
-- control characters too. ASCII text costs one pattern match.
local function check_utf8(value, what)
  if string.find(value, '[\128-\255]') then
    if not utf8_valid(value) then
      fail('BAD_REQUEST', what .. ' is not valid UTF-8')
    end
    if string.find(value, '\194[\128-\159]') then
      fail('BAD_REQUEST', what .. ' must not contain control characters')
    end
  end
  return value
end

-- A name-like text: not empty, at most NAME_MAX bytes, no control
-- characters (tab and newline too, unless `multiline`).
local function check_text(value, what, multiline, allow_empty)
  if type(value) ~= 'string' or (value == '' and not allow_empty) then
    fail('BAD_REQUEST', what .. ' must not be empty')
  end
  if #value > NAME_MAX then
    fail('BAD_REQUEST', what .. ' is longer than ' .. NAME_MAX .. ' bytes')
  end
  local controls = '[%c]'
  if multiline then
    controls = '[%z\1-\8\11-\31\127]'
  end
  if string.find(value, controls) then
    fail('BAD_REQUEST', what .. ' must not contain control characters')
  end
  return check_utf8(value, what)
end

-- Chat text: not empty, at most TEXT_MAX bytes; tabs and newlines are
-- allowed, no other control character is.
local function check_chat(value)
  if value == nil or value == '' then
    fail('BAD_REQUEST', 'text must not be empty')
  end
  if #value > TEXT_MAX then
    fail('BAD_REQUEST', 'text is longer than ' .. TEXT_MAX .. ' bytes')
  end
  -- Printable ASCII, tab and newline: the usual text, passed by one
  -- anchored scan (its class is parsed once, not at every byte as an
  -- unanchored find does: a tenth of the instructions). Anything else
  -- takes the full checks.
  if string.find(value, '^[ -~\t\n]*$') then
    return value
  end
  if string.find(value, '[%z\1-\8\11-\31\127]') then
    fail('BAD_REQUEST', 'text must not contain control characters other than tab and newline')
  end
  return check_utf8(value, 'text')
end

-- An e-mail address, lower-cased (ASCII only, as the daemon does).
local function check_email(value)
  if type(value) ~= 'string' or #value > 254 or not string.find(value, '^[^@%s%c]+@[^@%s%c]+$') then
    fail('BAD_REQUEST', 'email must look like name@domain, got ' .. show(value))
  end
  return string.lower(check_utf8(value, 'email'))
end

-- A client's key for a POST (1-64 bytes of A-Za-z0-9._:-), or nil.
local function check_post_key(value)
  if value == nil or value == '' then
    return nil
  end
  if #value > 64 or not string.find(value, '^[%w%._:%-]+$') then
    fail('BAD_REQUEST', 'the post key must be 1-64 bytes of A-Za-z0-9._:-, got ' .. show(value))
  end
  return value
end
