--[[
meet_meeting_get: a meeting with its audience and its instances.

Each instance's state is what the clock says at `now` (see instances.lua):
one past its `to` is ended, one whose window holds now and that wins the
overlap rule is active, whether or not a call or the tick applied it yet.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1]  now (ms; optional, Redis TIME when left out or '')
Returns: {id, <id>, title, <s>, description, <s>, public, <true/false>,
          audience_total, <n>, audience, {email...},
          instances_total, <n>, instances, {{order, from, to, state}...}}
  with at most 1000 e-mails (in order) and the first 1000 instances (by
  order); the totals say when there are more.
Errors: BAD_REQUEST, NOT_FOUND (no such meeting).
Flags: no-writes.
]]
local function meeting_get(keys, args)
  check_arity(args, 0, 1, '[now]')
  local base, meeting = meeting_key(keys[1])
  local now = clock(args[1])
  local m = redis.call('HMGET', keys[1], 'title', 'description', 'public', 'live', 'preempt')
  if not m[1] then
    fail('NOT_FOUND', 'meeting ' .. meeting .. ' does not exist')
  end
  local audience = base .. 'audience:' .. meeting
  local orders = base .. 'orders:' .. meeting
  local listed = redis.call('ZRANGE', orders, 0, PAGE_MAX - 1)
  local instances = {}
  local plan = #listed > 0 and pending(base, meeting, m[4], m[5], now)
  if #listed > 0 then
    local packed = redis.call('HMGET', base .. 'schedule:' .. meeting, unpack(listed))
    for i, order in ipairs(listed) do
      local from, to, state = string.match(packed[i] or '', '^(%d+)|(%d+)|(%a+)$')
      if from and state ~= 'ended' and not later(to, now) then
        state = 'ended'
      elseif plan and state == 'active' and plan.ends and plan.live == order then
        state = 'ended'
      elseif plan and state == 'scheduled' and plan.start and plan.start.order == order then
        state = 'active'
      end
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
