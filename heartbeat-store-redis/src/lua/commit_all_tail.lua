local retention = ARGV[i]; i = i + 1
local progress = tonumber(ARGV[i]); i = i + 1
for _ = 1, progress do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2
  redis.call('PEXPIRE', KEYS[2], retention)
end
local node = tonumber(ARGV[i]); i = i + 1
for _ = 1, node do
  redis.call('HSET', KEYS[6], ARGV[i], ARGV[i + 1]); i = i + 2
  redis.call('PEXPIRE', KEYS[6], retention)
end
local ended = tonumber(ARGV[i]); local cap = tonumber(ARGV[i + 1]); i = i + 2
if ended > 0 then
  for _ = 1, ended do
    redis.call('LPUSH', KEYS[3], ARGV[i]); i = i + 1
  end
  redis.call('LTRIM', KEYS[3], 0, cap - 1)
  redis.call('PEXPIRE', KEYS[3], retention)
end
