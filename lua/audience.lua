--[[
meet_audience_add, meet_audience_del: add e-mails to a meeting's audience
(who may join when the meeting is not public), or remove them. E-mails are
stored lower-cased. Removing someone does not take them out of an instance
they are in; they cannot join again.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
ARGV[1..] e-mails (at least one; as many as a call can carry)
Returns: {changed, <n>, audience_total, <n>, audience, {email...}} with the
  first 1000 e-mails in order.
Errors: BAD_REQUEST (an e-mail without @...: nothing changes),
  NOT_FOUND (no such meeting).
]]

-- Check a call; the audience's key and the lower-cased e-mails.
local function audience_call(keys, args)
  if #args < 1 then
    fail('BAD_REQUEST', 'wrong number of arguments (0), expected email...')
  end
  local base, meeting = meeting_key(keys[1])
  local emails = {}
  for i = 1, #args do
    emails[i] = check_email(args[i])
  end
  if redis.call('EXISTS', keys[1]) == 0 then
    fail('NOT_FOUND', 'meeting ' .. meeting .. ' does not exist')
  end
  return base .. 'audience:' .. meeting, emails, base, meeting
end

-- The change, for the archive: one entry, the e-mails separated by spaces.
local function outbox_audience(base, meeting, op, emails)
  outbox_add(base, 'k', 'audience', 'm', meeting, 'op', op, 'emails', table.concat(emails, ' '))
end

local function audience_reply(audience, changed)
  return {
    'changed', changed,
    'audience_total', redis.call('ZCARD', audience),
    'audience', redis.call('ZRANGE', audience, '-', '+', 'BYLEX', 'LIMIT', 0, PAGE_MAX),
  }
end

local function audience_add(keys, args)
  local audience, emails, base, meeting = audience_call(keys, args)
  outbox_audience(base, meeting, 'add', emails)
  local changed = 0
  for first = 1, #emails, 250 do
    local pairs_ = {}
    for i = first, math.min(first + 249, #emails) do
      pairs_[#pairs_ + 1] = '0'
      pairs_[#pairs_ + 1] = emails[i]
    end
    changed = changed + redis.call('ZADD', audience, unpack(pairs_))
  end
  return audience_reply(audience, changed)
end

local function audience_del(keys, args)
  local audience, emails, base, meeting = audience_call(keys, args)
  outbox_audience(base, meeting, 'del', emails)
  return audience_reply(audience, remove_members(audience, emails))
end

redis.register_function('meet_audience_add', audience_add)
redis.register_function('meet_audience_del', audience_del)
