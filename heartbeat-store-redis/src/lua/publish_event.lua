local id = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local event = '{"id":' .. string.format('%d', id) .. ',"job":' .. ARGV[2] .. '}'
redis.call('ZADD', KEYS[2], id, event)
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[3]) + 1))
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[1], event)
return id
