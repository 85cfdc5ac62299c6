-- Shared head of the migration scripts (KEYS[1] the key written, ARGV[1] the PTTL of the
-- earlier build's key, -1 for none): `written()` after the write leaves KEYS[1] with the
-- longer life of the two (no expiry if either had none), even if the write recreated it.
local before = redis.call('PTTL', KEYS[1])
local function written()
  local pttl = tonumber(ARGV[1])
  if before == -1 or pttl < 0 then redis.call('PERSIST', KEYS[1]) return end
  redis.call('PEXPIRE', KEYS[1], math.max(before, pttl))
end
