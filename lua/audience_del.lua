--[[
meet_audience_del: remove e-mails from a meeting's audience. Users already
in an instance stay in it; they cannot join again.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
KEYS[2]  meetingd:{p<P>}:audience:<meeting>
ARGV[1]  meeting id
ARGV[2..] e-mails (at least one)
Returns: {changed, n, audience_total, n, audience, {email...}}.
Errors: BAD_REQUEST, NOT_FOUND (no such meeting).
]]
local function audience_del(keys, args)
  local emails = audience_call(keys, args)
  local changed = redis.call('ZREM', keys[2], unpack(emails))
  return audience_reply(keys[2], changed)
end

redis.register_function { function_name = 'meet_audience_del', callback = guard(audience_del) }
