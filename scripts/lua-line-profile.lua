--[[
Lua VM instructions per source line of the library's hot calls, under
Debian's standalone Lua 5.1 (the version inside Redis): a count hook fires
on every VM instruction of the library's own lines. redis.call is a stub
that keeps one meeting's hash and answers the rest as the happy path does,
so this counts the library's Lua alone, not Redis' commands (those, and
the cost of each call into Redis, scripts/callgrind-join-leave.sh counts).

Usage: lua5.1 scripts/lua-line-profile.lua LIBRARY [join-leave|post] [N]
LIBRARY: `meetingd library --partitions 16` written to a file.
Prints the VM instructions per request (a JOIN+LEAVE pair, or a POST) and
the busiest lines of the library with their count per request.
]]
local path, op, n = arg[1], arg[2] or 'join-leave', tonumber(arg[3] or 200)
local file = assert(io.open(path), 'usage: lua5.1 scripts/lua-line-profile.lua LIBRARY [op] [N]')
-- the first line (`#!lua name=...`) becomes a comment: line numbers stay
local source = file:read('*a'):gsub('^#!', '--', 1)
file:close()

local now = os.time() * 1000
local meeting = { public = 'false', live = '1|' .. (now + 3600000) .. '|' .. now .. '|' }
local functions = {}
local replies = {
  HGET = function(_, field) return meeting[field] or false end,
  HMGET = function(_, ...)
    local out = {}
    for i, field in ipairs({ ... }) do
      out[i] = meeting[field] or false
    end
    return out
  end,
  HSET = function(_, field, value)
    meeting[field] = value
    return 0
  end,
  ZSCORE = function() return '1' end,
  ZADD = function() return 1 end,
  ZREM = function() return 1 end,
  XADD = function(_, id) return id end,
  SPUBLISH = function() return 0 end,
}
redis = {
  register_function = function(name, callback)
    if type(name) == 'table' then
      name, callback = name.function_name, name.callback
    end
    functions[name] = callback
  end,
  call = function(command, key, ...)
    local reply = replies[command]
    if not reply then
      error('the stub does not know ' .. command .. ' (a path off the happy one?)')
    end
    return reply(key, ...)
  end,
  error_reply = function(text) return { err = text } end,
}
assert(loadstring(source, 'library'))()

local key = 'meetingd:{p1}:meeting:1'
local function request(i)
  local user, t = tostring(i % 100 + 1), now + 2 * i
  if op == 'post' then
    functions.meet_post({ key }, { '', user, 'message ' .. i .. ' of the profiled run', tostring(t) })
  else
    functions.meet_join({ key }, { '', user, 'u' .. user .. '@example.com', tostring(t) })
    functions.meet_leave({ key }, { '', user, tostring(t + 1) })
  end
end
request(0) -- the memos fill

local counts, total = {}, 0
debug.sethook(function()
  local info = debug.getinfo(2, 'Sl')
  if info.source == 'library' then
    counts[info.currentline] = (counts[info.currentline] or 0) + 1
    total = total + 1
  end
end, '', 1)
for i = 1, n do
  request(i)
end
debug.sethook()

local lines = {}
for line in (source .. '\n'):gmatch('([^\n]*)\n') do
  lines[#lines + 1] = line
end
local busiest = {}
for line, count in pairs(counts) do
  busiest[#busiest + 1] = { line, count }
end
table.sort(busiest, function(a, b) return a[2] > b[2] or (a[2] == b[2] and a[1] < b[1]) end)
print(string.format('%s: %.1f VM instructions per request', op, total / n))
for i = 1, math.min(30, #busiest) do
  local line, count = busiest[i][1], busiest[i][2]
  print(string.format('%7.1f  %5d  %s', count / n, line, (lines[line] or ''):gsub('^%s+', ''):sub(1, 90)))
end
