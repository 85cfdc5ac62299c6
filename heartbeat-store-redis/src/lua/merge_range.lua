-- The first entries of an index kept in many sorted sets (a part per hash slot, every
-- score 0), merged in byte order. ARGV: min, max (as ZRANGEBYLEX takes them), limit, then
-- the keys, all served by this node (undeclared: a script may read any key of its node's
-- slots). Returns at most `limit` members. Each set is read a few entries at a time, so
-- a call reads about `limit` entries plus a few per set, however many each holds.
local min, max, limit, batch = ARGV[1], ARGV[2], tonumber(ARGV[3]), 8
-- Byte order, as sorted sets order their members (Lua's `<` follows the locale).
local function less(a, b)
  for j = 1, math.min(#a, #b) do
    local x, y = string.byte(a, j), string.byte(b, j)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local function next_batch(stream)
  stream.page = redis.call('ZRANGEBYLEX', stream.key, min, max, 'LIMIT', stream.offset, batch)
  stream.offset = stream.offset + #stream.page
  stream.at = 1
  return #stream.page > 0
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
for k = 4, #ARGV do
  local stream = { key = ARGV[k], offset = 0 }
  if next_batch(stream) then
    streams[#streams + 1] = stream
    heap[#heap + 1] = #streams
  end
end
for j = math.floor(#heap / 2), 1, -1 do sift_down(j) end
local found = {}
while #found < limit and #heap > 0 do
  local s = heap[1]
  local stream = streams[s]
  found[#found + 1] = head(s)
  stream.at = stream.at + 1
  if stream.at > #stream.page and not (#stream.page == batch and next_batch(stream)) then
    heap[1] = heap[#heap]
    heap[#heap] = nil
  end
  if #heap > 0 then sift_down(1) end
end
return found
