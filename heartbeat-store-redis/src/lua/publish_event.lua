local id = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[5])
if id < floor then
  -- Ids carry the time (microseconds): catch up with it. A lost counter (a restart
  -- without persistence, a failover, an expired key) so goes on above every id
  -- handed out before.
  redis.call('SET', KEYS[1], ARGV[5])
  id = floor
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local event = '{"id":' .. string.format('%d', id) .. ',"job":' .. ARGV[2] .. '}'
redis.call('ZADD', KEYS[2], id, event)
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[3]) + 1))
redis.call('PEXPIRE', KEYS[2], ARGV[4])
-- PUBLISH (one server) or SPUBLISH (a cluster: the channel is in the owner's slot).
redis.call(ARGV[6], ARGV[1], event)
return id
