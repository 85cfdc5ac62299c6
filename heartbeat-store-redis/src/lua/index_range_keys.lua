-- A page of an analytics index kept in many sorted sets (one per hash slot), merged in
-- order. ARGV: after (exclusive), before (exclusive), limit, then the keys, all served by
-- this node (undeclared: a script may read any key of its node's slots). Returns the
-- first `limit` entries. Each set is read a few entries at a time, so a page reads about
-- `limit` entries plus a few per set, however many each set holds.
local before, limit, batch = '(' .. ARGV[2], tonumber(ARGV[3]), 8
-- Byte order, as sorted sets order their members (Lua's `<` follows the locale).
local function less(a, b)
  for j = 1, math.min(#a, #b) do
    local x, y = string.byte(a, j), string.byte(b, j)
    if x ~= y then return x < y end
  end
  return #a < #b
end
-- One stream per set: its current batch and the position in it.
local streams, heap = {}, {}
local function next_batch(stream, after)
  stream.page = redis.call('ZRANGEBYLEX', stream.key, '(' .. after, before, 'LIMIT', 0, batch)
  stream.at = 1
  return #stream.page > 0
end
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
  local stream = { key = ARGV[k] }
  if next_batch(stream, ARGV[1]) then
    streams[#streams + 1] = stream
    heap[#heap + 1] = #streams
  end
end
for j = math.floor(#heap / 2), 1, -1 do sift_down(j) end
local found = {}
while #found < limit and #heap > 0 do
  local s = heap[1]
  local stream, entry = streams[s], head(s)
  found[#found + 1] = entry
  stream.at = stream.at + 1
  if stream.at > #stream.page and not (#stream.page == batch and next_batch(stream, entry)) then
    heap[1] = heap[#heap]
    heap[#heap] = nil
  end
  if #heap > 0 then sift_down(1) end
end
return found
