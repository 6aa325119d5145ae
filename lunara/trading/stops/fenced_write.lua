-- Every write of stop hashes other than the advance, fenced like it
-- (lunara.trading.stops.redis): KEYS[1] the instance lease, then the stop hashes;
-- ARGV[1] the epoch, then per hash "del", or "set", a field count and the fields and
-- values. A caller whose epoch is not the lease's writes nothing.
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then
  return redis.error_reply('LUNARA_STALE_EPOCH the instance lease has another epoch')
end
local a = 2
for i = 2, #KEYS do
  local op = ARGV[a]
  a = a + 1
  if op == 'del' then
    redis.call('DEL', KEYS[i])
  else
    local n = tonumber(ARGV[a]) * 2
    a = a + 1
    redis.call('HSET', KEYS[i], unpack(ARGV, a, a + n - 1))
    a = a + n
  end
end
return #KEYS - 1
