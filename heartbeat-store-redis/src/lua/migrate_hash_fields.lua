-- Sets fields of a hash, each only if it still holds what the caller read ('' for
-- absent): a field written meanwhile is newer than the earlier build's. ARGV from 2:
-- triples (field, expected, value). Returns the fields set.
local set = 0
for i = 2, #ARGV, 3 do
  local current = redis.call('HGET', KEYS[1], ARGV[i]) or ''
  if current == ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    set = set + 1
  end
end
if set > 0 then written() end
return set
