--[[
meet_layout: the number of partitions the data was laid out with. The first
daemon to connect records its own; every later one compares, because a
meeting's keys are named after its partition (meeting mod P), and a daemon
with another P would look for them under other names.

KEYS[1]  meetingd:{layout}:partitions
ARGV[1]  the daemon's number of partitions, 1..1000000
Returns: the number recorded (the one given, when none was).
Errors: BAD_REQUEST.
]]
local function layout(keys, args)
  check_arity(args, 1, 1, 'partitions')
  if keys[1] ~= 'meetingd:{layout}:partitions' or #keys ~= 1 then
    fail('BAD_REQUEST', 'expected the one key meetingd:{layout}:partitions')
  end
  local partitions = check_count(args[1], 'partitions', 1000000, nil)
  if not partitions then
    fail('BAD_REQUEST', 'partitions must be given')
  end
  redis.call('SET', keys[1], tostring(partitions), 'NX')
  return tonumber(redis.call('GET', keys[1]))
end

redis.register_function('meet_layout', layout)
