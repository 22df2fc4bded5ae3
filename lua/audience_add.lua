--[[
meet_audience_add: add e-mails to a meeting's audience (who may join when
the meeting is not public). E-mails are stored lower-cased.

KEYS[1]  meetingd:{p<P>}:meeting:<meeting>
KEYS[2]  meetingd:{p<P>}:audience:<meeting>
ARGV[1]  meeting id
ARGV[2..] e-mails (at least one)
Returns: {changed, n, audience_total, n, audience, {email...}} with the
  first 1000 e-mails in order.
Errors: BAD_REQUEST (an e-mail without @...: nothing is added),
  NOT_FOUND (no such meeting).
]]

-- Shared by add and del: validate the call, returning the lower-cased e-mails.
local function audience_call(keys, args)
  if #args < 2 then
    fail('BAD_REQUEST', 'wrong number of arguments (' .. #args .. '), expected meeting, email...')
  end
  local tag = partition_tag(keys)
  local meeting = check_id(args[1], 'meeting')
  expect_keys(keys, { key(tag, 'meeting', meeting), key(tag, 'audience', meeting) })
  local emails = {}
  for i = 2, #args do
    emails[#emails + 1] = check_email(args[i])
  end
  meeting_record(keys[1], meeting)
  return emails
end

local function audience_reply(audience, changed)
  return {
    'changed', changed,
    'audience_total', redis.call('ZCARD', audience),
    'audience', redis.call('ZRANGE', audience, '-', '+', 'BYLEX', 'LIMIT', 0, PAGE_MAX),
  }
end

local function audience_add(keys, args)
  local emails = audience_call(keys, args)
  local changed = 0
  for _, email in ipairs(emails) do
    changed = changed + redis.call('ZADD', keys[2], 0, email)
  end
  return audience_reply(keys[2], changed)
end

redis.register_function { function_name = 'meet_audience_add', callback = guard(audience_add) }
