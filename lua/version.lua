--[[
meet_version: the library's version, which the daemon compares with its own
to decide whether to load the library again.

KEYS: none
ARGV: none
Returns: the version string, "<crate version>+<digest of the library>".
Errors: none.
Flags: no-writes.
]]
redis.register_function {
  function_name = 'meet_version',
  callback = guard(function(keys, args)
    return VERSION
  end),
  flags = { 'no-writes' },
}
