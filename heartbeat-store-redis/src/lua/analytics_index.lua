-- The analytics indexes, sorted sets read by lexical range (every score is 0):
-- KEYS[#KEYS - 1] finished sessions, KEYS[#KEYS] refusals. From ARGV[i]: ttl ms, m,
-- m × (the entry to drop or '', the entry to add), the refusal to add or '', the oldest
-- entry kept (older ones are dropped; '' keeps all). Nothing when the ttl is ''.
local finished, refusals = KEYS[#KEYS - 1], KEYS[#KEYS]
local ttl = ARGV[i]; i = i + 1
if ttl == '' then return 1 end
local moves = tonumber(ARGV[i]); i = i + 1
for _ = 1, moves do
  if ARGV[i] ~= '' then redis.call('ZREM', finished, ARGV[i]) end
  redis.call('ZADD', finished, 0, ARGV[i + 1]); i = i + 2
end
if ARGV[i] ~= '' then redis.call('ZADD', refusals, 0, ARGV[i]) end
local keep_from = ARGV[i + 1]
if keep_from ~= '' then
  redis.call('ZREMRANGEBYLEX', finished, '-', '(' .. keep_from)
  redis.call('ZREMRANGEBYLEX', refusals, '-', '(' .. keep_from)
end
for _, key in ipairs({finished, refusals}) do
  if redis.call('EXISTS', key) == 1 then redis.call('PEXPIRE', key, ttl) end
end
return 1
