-- Sets a string only if it holds what the caller read: ARGV[1] ('' for absent), then the
-- new value ARGV[2], with the TTL ARGV[3] in ms ('' or not above 0: none). 1 set, 0 changed.
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[3])
if ttl and ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
