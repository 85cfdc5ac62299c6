-- Deletes a key only if it still holds ARGV[1]. 1 deleted, 0 changed.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
