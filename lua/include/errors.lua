--[[
errors: how the library says no.

A refusal is `error({ err = 'CODE message' })`: Redis 7 turns the table into
the error reply `CODE message`, with the place it was raised appended
(` script: ..., on @user_function:<line>.`), which the daemon drops. No
pcall wraps the functions: a Lua mistake (a bug) reaches the caller as
Redis' own `ERR ...`, which the daemon reports as internal.

Every function checks everything before its first write, so a call that
answers with an error has changed nothing.

Codes: BAD_REQUEST, NOT_FOUND, INACTIVE, NOT_ALLOWED, ALREADY_JOINED,
NOT_JOINED.
]]

local function fail(code, message)
  error({ err = code .. ' ' .. message })
end

-- Whether `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no
-- surrogates, nothing past U+10FFFF). ASCII runs are skipped by one find,
-- so the common case costs one pattern match.
local function utf8_valid(s)
  local i = string.find(s, '[\128-\255]')
  local byte = string.byte
  while i do
    local c, c2, c3, c4 = byte(s, i, i + 3)
    local lo, hi, width = 128, 191, 0
    if c >= 194 and c <= 223 then
      width = 2
    elseif c >= 224 and c <= 239 then
      width = 3
      if c == 224 then lo = 160 elseif c == 237 then hi = 159 end
    elseif c >= 240 and c <= 244 then
      width = 4
      if c == 240 then lo = 144 elseif c == 244 then hi = 143 end
    else
      return false
    end
    if not c2 or c2 < lo or c2 > hi then
      return false
    end
    if width > 2 and (not c3 or c3 < 128 or c3 > 191) then
      return false
    end
    if width > 3 and (not c4 or c4 < 128 or c4 > 191) then
      return false
    end
    i = string.find(s, '[\128-\255]', i + width)
  end
  return true
end

-- A value as it appears in an error message: quoted, at most 40 bytes,
-- every byte outside printable ASCII written as \xNN, so an error reply
-- is always plain text whatever the caller sent.
local function show(value)
  if value == nil then
    return 'nothing'
  end
  local s = tostring(value)
  local cut = #s > 40
  if cut then
    s = string.sub(s, 1, 40)
  end
  s = string.gsub(s, '[^\32-\126]', function(c)
    return string.format('\\x%02x', string.byte(c))
  end)
  if cut then
    s = s .. '...'
  end
  return '"' .. s .. '"'
end

local function check_arity(args, min, max, usage)
  if #args < min or #args > max then
    fail('BAD_REQUEST', 'wrong number of arguments (' .. #args .. '), expected ' .. usage)
  end
end
