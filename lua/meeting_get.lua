--[[
meet_meeting_get: a meeting with its audience and its instances.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
KEYS[2]  meetingd:{p<P>}:audience:<meeting>
KEYS[3]  meetingd:{p<P>}:orders:<meeting>
KEYS[4]  meetingd:{p<P>}:schedule:<meeting>
ARGV[1]  meeting id
Returns: {id, title, description, public,
          audience_total, n, audience, {email...},
          instances_total, n, instances, {{order, from, to, state}...}}
  with at most 1000 e-mails (in order) and the first 1000 instances (by
  order); the totals say when there are more.
Errors: BAD_REQUEST, NOT_FOUND (no such meeting).
Flags: no-writes.
]]
local function meeting_get(keys, args)
  check_arity(args, 1, 1, 'meeting')
  local tag = partition_tag(keys)
  local meeting = check_id(args[1], 'meeting')
  expect_keys(keys, {
    key(tag, 'meeting', meeting), key(tag, 'audience', meeting),
    key(tag, 'orders', meeting), key(tag, 'schedule', meeting),
  })
  local record = meeting_record(keys[1], meeting)
  local audience = redis.call('ZRANGE', keys[2], '-', '+', 'BYLEX', 'LIMIT', 0, PAGE_MAX)
  local orders = redis.call('ZRANGE', keys[3], 0, PAGE_MAX - 1)
  local instances = {}
  if #orders > 0 then
    local packed = redis.call('HMGET', keys[4], unpack(orders))
    for i, order in ipairs(orders) do
      local from, to, state = string.match(packed[i] or '', '^(%d+)|(%d+)|(%a+)$')
      instances[#instances + 1] = { order, tonumber(from), tonumber(to), state }
    end
  end
  local n = #record
  record[n + 1], record[n + 2] = 'audience_total', redis.call('ZCARD', keys[2])
  record[n + 3], record[n + 4] = 'audience', audience
  record[n + 5], record[n + 6] = 'instances_total', redis.call('ZCARD', keys[3])
  record[n + 7], record[n + 8] = 'instances', instances
  return record
end

redis.register_function {
  function_name = 'meet_meeting_get',
  callback = guard(meeting_get),
  flags = { 'no-writes' },
}
