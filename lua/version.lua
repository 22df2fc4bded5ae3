--[[
meet_version: the library's version, which the daemon compares with its own
to decide whether to load the library again.

KEYS: none
ARGV: none
Returns: "<crate version>+<digest of the library>/p<PARTITIONS>".
Errors: none.
Flags: no-writes.
]]
redis.register_function {
  function_name = 'meet_version',
  callback = function()
    return VERSION
  end,
  flags = { 'no-writes' },
}
