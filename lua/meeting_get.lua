--[[
meet_meeting_get: a meeting with its audience and its instances.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
Returns: {id, <id>, title, <s>, description, <s>, public, <true/false>,
          audience_total, <n>, audience, {email...},
          instances_total, <n>, instances, {{order, from, to, state}...}}
  with at most 1000 e-mails (in order) and the first 1000 instances (by
  order); the totals say when there are more.
Errors: BAD_REQUEST, NOT_FOUND (no such meeting).
Flags: no-writes.
]]
local function meeting_get(keys, args)
  check_arity(args, 0, 0, 'nothing')
  local base, meeting = meeting_key(keys[1])
  local m = redis.call('HMGET', keys[1], 'title', 'description', 'public')
  if not m[1] then
    fail('NOT_FOUND', 'meeting ' .. meeting .. ' does not exist')
  end
  local audience = base .. 'audience:' .. meeting
  local orders = base .. 'orders:' .. meeting
  local listed = redis.call('ZRANGE', orders, 0, PAGE_MAX - 1)
  local instances = {}
  if #listed > 0 then
    local packed = redis.call('HMGET', base .. 'schedule:' .. meeting, unpack(listed))
    for i, order in ipairs(listed) do
      local from, to, state = string.match(packed[i] or '', '^(%d+)|(%d+)|(%a+)$')
      instances[#instances + 1] = { order, from, to, state }
    end
  end
  return {
    'id', meeting, 'title', m[1], 'description', m[2], 'public', m[3],
    'audience_total', redis.call('ZCARD', audience),
    'audience', redis.call('ZRANGE', audience, '-', '+', 'BYLEX', 'LIMIT', 0, PAGE_MAX),
    'instances_total', redis.call('ZCARD', orders),
    'instances', instances,
  }
end

redis.register_function {
  function_name = 'meet_meeting_get',
  callback = meeting_get,
  flags = { 'no-writes' },
}
