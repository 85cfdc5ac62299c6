-- Adds members to a sorted set (a member there already keeps its place). ARGV from 2:
-- pairs (score, member). Returns 1.
for i = 2, #ARGV, 1000 do
  redis.call('ZADD', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
written()
return 1
