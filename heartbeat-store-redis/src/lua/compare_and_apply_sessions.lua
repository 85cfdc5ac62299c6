local hash = KEYS[1]
local n = tonumber(ARGV[1])
if redis.call('HLEN', hash) ~= n then return 0 end
local i = 2
for _ = 1, n do
  if redis.call('HGET', hash, ARGV[i]) ~= ARGV[i + 1] then return 0 end
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
if redis.call('EXISTS', hash) == 1 then redis.call('PEXPIRE', hash, ARGV[i]) end
i = i + 1
