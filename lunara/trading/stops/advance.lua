-- Advance the trailing stops of many positions in one call (lunara.trading.stops.redis).
--
-- Mirrors trailing.advance operation for operation (same order, same doubles): the stop is
-- proposed from the current price, so settings sent on a tick after a trader changed them
-- apply from that price on and never sell by themselves. Numbers travel as round-trip
-- exact text: Python's repr in, "%.17g" out. Lua's own number to string conversion keeps
-- only 14 digits, so every stored number is formatted here.
--
-- KEYS[1]: the deployment's instance lease (lunara.instance); then one hash per
-- position. ARGV[6]: the fencing epoch of the caller, "" when no lease is in use: a
-- caller whose epoch is not the lease's (it lost the lease while paused) moves nothing.
-- ARGV[1]: now. ARGV[2]: the price of each symbol slot, space-separated. ARGV[3]: five
-- fields per settings slot: stoploss, trailing_stop (1|0), trailing_stop_positive ("-"
-- for none), offset, trailing_only_offset_is_reached (1|0). ARGV[4]: two numbers per
-- position, its symbol slot and its settings slot. ARGV[5]: the fee rate, for the
-- fee-inclusive profit the offset is compared with. Prices and settings are shared by
-- many positions, so each is sent and parsed once, not once per position. The reply has
-- one line per position that needs the client's attention,
-- "<i> changed peak stop activated triggered", "<i> triggered" (levels unchanged) or
-- "<i> missing"; a position whose levels held and whose stop was not hit is left out.
-- Packing arguments and reply into single strings keeps encoding and RESP parsing off
-- the client's CPU: a nested reply per position costs more to parse than the script to run.
if ARGV[6] ~= '' and redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[6] then
  return redis.error_reply('LUNARA_STALE_EPOCH the instance lease has another epoch')
end
local now = ARGV[1]
local fee = tonumber(ARGV[5])
local prices = {}
for token in string.gmatch(ARGV[2], '%S+') do prices[#prices + 1] = tonumber(token) end
local tokens = {}
for token in string.gmatch(ARGV[3], '%S+') do tokens[#tokens + 1] = token end
local settings = {}
for slot = 1, #tokens / 5 do
  local base = (slot - 1) * 5
  settings[slot] = {
    stoploss = tonumber(tokens[base + 1]),
    trailing = tokens[base + 2] == '1',
    positive = tonumber(tokens[base + 3]),
    offset = tonumber(tokens[base + 4]),
    only_offset = tokens[base + 5] == '1',
  }
end
local lines = {}
local i = 0
for symbol_slot, settings_slot in string.gmatch(ARGV[4], '(%d+) (%d+)') do
  i = i + 1
  local price = prices[tonumber(symbol_slot)]
  local params = settings[tonumber(settings_slot)]
  local row = redis.call('HMGET', KEYS[i + 1],
    'entry_price', 'peak_price', 'stop_price', 'activated', 'updated_at')
  local entry = tonumber(row[1])
  local old_peak = tonumber(row[2])
  local old_stop = tonumber(row[3])
  if not (entry and old_peak and old_stop and row[5]) then
    lines[#lines + 1] = i .. ' missing'
  else
    local old_activated = row[4] == '1'
    local peak = old_peak
    if price > old_peak then peak = price end
    local activated = old_activated
    local stop = old_stop
    if params.trailing then
      local ratio = (price * (1.0 - fee)) / (entry * (1.0 + fee)) - 1.0
      local profit = tonumber(string.format('%.8f', ratio))
      local candidate = nil
      if not (params.only_offset and profit < params.offset) then
        if params.positive ~= nil and profit > params.offset then
          candidate = price * (1.0 - params.positive)
        else
          candidate = price * (1.0 + params.stoploss)
        end
      end
      if candidate ~= nil and candidate > old_stop then
        stop = candidate
        activated = true
      end
    end
    local triggered = '0'
    if price <= stop then triggered = '1' end
    if peak ~= old_peak or stop ~= old_stop or activated ~= old_activated then
      local flag = '0'
      if activated then flag = '1' end
      local peak_text = string.format('%.17g', peak)
      local stop_text = string.format('%.17g', stop)
      redis.call('HSET', KEYS[i + 1], 'peak_price', peak_text, 'stop_price', stop_text,
        'activated', flag, 'updated_at', now)
      lines[#lines + 1] = i .. ' changed ' .. peak_text .. ' ' .. stop_text .. ' ' ..
        flag .. ' ' .. triggered
    elseif triggered == '1' then
      lines[#lines + 1] = i .. ' triggered'
    end
  end
end
return table.concat(lines, '\n')
