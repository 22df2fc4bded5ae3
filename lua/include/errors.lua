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

-- A value as it appears in an error message: quoted, at most 40 bytes.
local function show(value)
  if value == nil then
    return 'nothing'
  end
  local s = tostring(value)
  if #s > 40 then
    s = string.sub(s, 1, 40) .. '...'
  end
  return '"' .. s .. '"'
end

local function check_arity(args, min, max, usage)
  if #args < min or #args > max then
    fail('BAD_REQUEST', 'wrong number of arguments (' .. #args .. '), expected ' .. usage)
  end
end
