-- The whole commit of a heartbeat (scripts.rs, COMMIT_ALL). ARGV[1] holds the counts,
-- space-separated (one argument instead of eleven: each argument costs the client an
-- allocation and a frame): n removals upserts keep retention progress node ended cap
-- indexed moves. The strings they count follow, in this order. `retention` (ms) is also
-- the indexes' TTL.
local h = {}
for v in string.gmatch(ARGV[1], '%d+') do h[#h + 1] = v end
local n, removals, upserts = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
local keep, retention = h[4], h[5]
local progress, node, ended, cap = tonumber(h[6]), tonumber(h[7]), tonumber(h[8]), tonumber(h[9])
local indexed, moves = tonumber(h[10]), tonumber(h[11])
local hash = KEYS[1]
-- Unchanged since it was loaded: the same n fields with the same values, read with one
-- command (not HLEN and one HGET per field).
local stored = redis.call('HGETALL', hash)
if #stored ~= 2 * n then return 0 end
local current = {}
for j = 1, #stored, 2 do current[stored[j]] = stored[j + 1] end
local i = 2
for _ = 1, n do
  if current[ARGV[i]] ~= ARGV[i + 1] then return 0 end
  i = i + 2
end
for _ = 1, removals do
  redis.call('HDEL', hash, ARGV[i]); i = i + 1
end
for _ = 1, upserts do
  redis.call('HSET', hash, ARGV[i], ARGV[i + 1]); i = i + 2
end
-- A no-op when the last session was removed (the key is gone).
redis.call('PEXPIRE', hash, keep)
-- Progress (KEYS[2]), the Node server's progress hash (KEYS[6], one server only) and the
-- history (KEYS[3]), oldest entry first.
for _ = 1, progress do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2
  redis.call('PEXPIRE', KEYS[2], retention)
end
for _ = 1, node do
  redis.call('HSET', KEYS[6], ARGV[i], ARGV[i + 1]); i = i + 2
  redis.call('PEXPIRE', KEYS[6], retention)
end
if ended > 0 then
  for _ = 1, ended do
    redis.call('LPUSH', KEYS[3], ARGV[i]); i = i + 1
  end
  redis.call('LTRIM', KEYS[3], 0, cap - 1)
  redis.call('PEXPIRE', KEYS[3], retention)
end
-- The analytics indexes, sorted sets read by lexical range (every score is 0):
-- KEYS[4] finished sessions, KEYS[5] refusals (the user's slot on a cluster). When
-- indexed: moves × (the entry to drop or '', the entry to add), the refusal to add or '',
-- the oldest entry kept (older ones are dropped; '' keeps all). An index is trimmed and
-- its TTL refreshed only when this write adds to it.
if indexed == 0 then return 1 end
local finished, refusals = KEYS[4], KEYS[5]
local refusal, keep_from = ARGV[i + 2 * moves], ARGV[i + 2 * moves + 1]
local function added(key)
  if keep_from ~= '' then redis.call('ZREMRANGEBYLEX', key, '-', '(' .. keep_from) end
  redis.call('PEXPIRE', key, retention)
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
