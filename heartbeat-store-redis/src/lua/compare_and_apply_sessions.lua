local hash = KEYS[1]
local n = tonumber(ARGV[1])
-- Unchanged since it was loaded: the same n fields with the same values, read with one
-- command (not HLEN and one HGET per field).
local stored = redis.call('HGETALL', hash)
if #stored ~= 2 * n then return 0 end
local current = {}
for j = 1, #stored, 2 do current[stored[j]] = stored[j + 1] end
local i = 2
for _ = 1, n do
  if current[ARGV[i]] ~= ARGV[i + 1] then return 0 end
  i = i + 2
end
local removals = tonumber(ARGV[i]); i = i + 1
for _ = 1, removals do
  redis.call('HDEL', hash, ARGV[i]); i = i + 1
end
local upserts = tonumber(ARGV[i]); i = i + 1
for _ = 1, upserts do
  redis.call('HSET', hash, ARGV[i], ARGV[i + 1]); i = i + 2
end
-- A no-op when the last session was removed (the key is gone).
redis.call('PEXPIRE', hash, ARGV[i])
i = i + 1
