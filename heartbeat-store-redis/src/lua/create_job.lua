-- A new job, indexed by its owner and, on one server, if the simulator completes it, by
-- due time. KEYS: the job, the owner's jobs, [the due index]. ARGV: job JSON, ttl ms,
-- id, due time (unix ms) or ''. Returns 0, writing nothing, when a job with this id is
-- still stored (its slot's counter was lost and handed the id out again).
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if KEYS[3] and ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
return 1
