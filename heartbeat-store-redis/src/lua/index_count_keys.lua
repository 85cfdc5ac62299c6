-- How many entries an analytics index kept in many sorted sets holds from an entry on:
-- ARGV: from (inclusive), then the keys, all served by this node.
local from, count = '[' .. ARGV[1], 0
for k = 2, #ARGV do
  count = count + redis.call('ZLEXCOUNT', ARGV[k], from, '+')
end
return count
