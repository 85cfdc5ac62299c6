-- KEYS: the job, and the due index when its entry is to go. ARGV: expected, new value,
-- ttl ms, the id (the due index's member).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if KEYS[2] then redis.call('ZREM', KEYS[2], ARGV[4]) end
return 1
