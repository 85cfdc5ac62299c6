-- The first entries of an index kept in many sorted sets (a part per hash slot), merged
-- in order. ARGV: 'lex' or 'score', min, max (as ZRANGEBYLEX / ZRANGEBYSCORE take them),
-- limit, then the keys, all served by this node (undeclared: a script may read any key of
-- its node's slots). Returns member, score, member, score, … (the score '0' for 'lex'),
-- at most `limit` pairs, by score then member. Each set is read a few entries at a time,
-- so a page reads about `limit` entries plus a few per set, however many each holds.
local by_score, min, max = ARGV[1] == 'score', ARGV[2], ARGV[3]
local limit, batch = tonumber(ARGV[4]), 8
-- Byte order, as sorted sets order their members (Lua's `<` follows the locale).
local function bytes_less(a, b)
  for j = 1, math.min(#a, #b) do
    local x, y = string.byte(a, j), string.byte(b, j)
    if x ~= y then return x < y end
  end
  return #a < #b
end
-- An entry: { member, score as a number, score as sent }.
local function less(x, y)
  if x[2] ~= y[2] then return x[2] < y[2] end
  return bytes_less(x[1], y[1])
end
local function next_batch(stream)
  local page = {}
  if by_score then
    local flat = redis.call('ZRANGEBYSCORE', stream.key, min, max, 'WITHSCORES', 'LIMIT', stream.offset, batch)
    for j = 1, #flat, 2 do page[#page + 1] = { flat[j], tonumber(flat[j + 1]), flat[j + 1] } end
  else
    local members = redis.call('ZRANGEBYLEX', stream.key, min, max, 'LIMIT', stream.offset, batch)
    for j = 1, #members do page[j] = { members[j], 0, '0' } end
  end
  stream.offset = stream.offset + #page
  stream.page, stream.at = page, 1
  return #page > 0
end
local streams, heap = {}, {}
local function head(s) return streams[s].page[streams[s].at] end
local function sift_down(j)
  local n = #heap
  while true do
    local smallest, l, r = j, 2 * j, 2 * j + 1
    if l <= n and less(head(heap[l]), head(heap[smallest])) then smallest = l end
    if r <= n and less(head(heap[r]), head(heap[smallest])) then smallest = r end
    if smallest == j then return end
    heap[j], heap[smallest] = heap[smallest], heap[j]
    j = smallest
  end
end
for k = 5, #ARGV do
  local stream = { key = ARGV[k], offset = 0 }
  if next_batch(stream) then
    streams[#streams + 1] = stream
    heap[#heap + 1] = #streams
  end
end
for j = math.floor(#heap / 2), 1, -1 do sift_down(j) end
local found, taken = {}, 0
while taken < limit and #heap > 0 do
  local s = heap[1]
  local stream, entry = streams[s], head(s)
  found[#found + 1] = entry[1]
  found[#found + 1] = entry[3]
  taken = taken + 1
  stream.at = stream.at + 1
  if stream.at > #stream.page and not (#stream.page == batch and next_batch(stream)) then
    heap[1] = heap[#heap]
    heap[#heap] = nil
  end
  if #heap > 0 then sift_down(1) end
end
return found
