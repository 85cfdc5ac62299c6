-- Replaces a list with the merge the caller made, only if its head and length are still
-- what the caller read (a commit pushes at the head). ARGV: pttl, expected head ('' for
-- an empty list), expected length, then the items in order. 1 replaced, 0 changed.
local head = redis.call('LINDEX', KEYS[1], 0) or ''
if head ~= ARGV[2] or redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[3]) then return 0 end
redis.call('DEL', KEYS[1])
for i = 4, #ARGV, 500 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
written()
return 1
