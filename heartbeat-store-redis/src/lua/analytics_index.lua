-- The analytics indexes, sorted sets read by lexical range (every score is 0):
-- KEYS[4] finished sessions, KEYS[5] refusals (the user's slot on a cluster). From ARGV[i]: ttl ms, m,
-- m × (the entry to drop or '', the entry to add), the refusal to add or '', the oldest
-- entry kept (older ones are dropped; '' keeps all). Nothing when the ttl is ''.
-- An index is trimmed and its TTL refreshed only when this write adds to it.
local finished, refusals = KEYS[4], KEYS[5]
local ttl = ARGV[i]; i = i + 1
if ttl == '' then return 1 end
local moves = tonumber(ARGV[i]); i = i + 1
local refusal, keep_from = ARGV[i + 2 * moves], ARGV[i + 2 * moves + 1]
local function added(key)
  if keep_from ~= '' then redis.call('ZREMRANGEBYLEX', key, '-', '(' .. keep_from) end
  redis.call('PEXPIRE', key, ttl)
end
for _ = 1, moves do
  if ARGV[i] ~= '' then redis.call('ZREM', finished, ARGV[i]) end
  redis.call('ZADD', finished, 0, ARGV[i + 1]); i = i + 2
end
if moves > 0 then added(finished) end
if refusal ~= '' then
  redis.call('ZADD', refusals, 0, refusal)
  added(refusals)
end
return 1
