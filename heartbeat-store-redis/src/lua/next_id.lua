-- The next number of a counter, never below the floor ARGV[2] (the time in seconds): a
-- counter that expired (no job in its slot for the retention) or was lost goes on above
-- every number handed out at about one a second or slower.
local id = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[2])
if id < floor then
  redis.call('SET', KEYS[1], ARGV[2])
  id = floor
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return id
