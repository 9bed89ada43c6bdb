--[[
  Applies monitor entries (cloud/monitor/conflate.ts) to the state of their units, each entry
  atomically with everything it touches: the unit's hash and alarms, its site's counts, the
  indexes and the change announcements never disagree.

  Monotonic in device time: a field group (telemetry, status, each alarm) is overwritten only by an
  entry with a later (device ts, stream seq) than the one it holds, so a late, replayed or
  redelivered message never moves state backwards and applying one twice changes nothing.
  Last-seen only grows (receive time, ZADD GT). Numbers travel as strings and are stored as given:
  Lua would print a double with 14 digits.

  Input (applyCall in cloud/monitor/scripts.ts builds both lists):
    KEYS[1]  sites               (set)         every site seen
    KEYS[2]  lastseen            (sorted set)  <site>:<device> by last-seen ms
    KEYS[3]  online              (sorted set)  units not offline
    KEYS[4]  changes             (stream)      one entry per change
    then per entry, 4 keys (KEYS_PER_ENTRY):
      unit                       (hash)        the unit's state
      unit alarms                (hash)        per alarm: <tsMs>|<stream seq>|<action>|<severity>
      site                       (hash)        units, online, offline, faulted
      site lastseen              (sorted set)  <device> by last-seen ms

    ARGV[1]  now (ms)
    ARGV[2]  offlineAfterMs
    ARGV[3]  changes stream max length (approximate)
    then per entry, 10 values (ARGS_PER_ENTRY, applyArgs): kind (telemetry|status|event|seen),
      site, device, stream seq, device ts (ms), fields (JSON object of strings) of its content;
      stream seq and receive time (ms) of its first message, which a change it makes names; the
      highest stream seq and the latest receive time it stands for.

  Output: per entry, 1 if it changed the unit's state, 0 if it was older than what is there, or
  'error: <text>' if applying it failed (the other entries are applied all the same).

  Every key is passed in KEYS. On Redis Cluster all keys of a call must share a slot, and every call
  touches the global indexes (KEYS[1..4]): the monitor's key prefix must then be a hash tag
  (e.g. '{bsu}:'), which keeps the whole monitor on one shard.
]]
local KEYS_PER_ENTRY, ARGS_PER_ENTRY, HEAD_ARGS = 4, 10, 3
local sitesKey, lastseen, online, changes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, offlineAfter, maxlen = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local entries = (#KEYS - 4) / KEYS_PER_ENTRY
if entries ~= math.floor(entries) or #ARGV ~= HEAD_ARGS + entries * ARGS_PER_ENTRY then
  return redis.error_reply('ERR apply: ' .. #KEYS .. ' keys and ' .. #ARGV .. ' arguments do not make whole entries')
end

-- HGET/HMGET give false for a missing field.
local function num(v) if v then return tonumber(v) end return nil end
local function str(v) if v then return v end return nil end

-- The entry being applied (set before each apply()): one message, or readings folded together.
local kind, site, device, seqText, tsText, atSeqText, atSeenText, lastSeqText, seenText, seq, ts, seen, f
local unit, alarms, siteKey, siteLastseen, member

local function announce(change, from, to, atTs)
  redis.call('XADD', changes, 'MAXLEN', '~', maxlen, '*', 'unit', member, 'site', site, 'device', device,
    'change', change, 'from', from or '', 'to', to or '', 'tsMs', atTs, 'seq', atSeqText)
end

local function newerThan(oldTs, oldSeq)
  if oldTs == nil then return true end
  if ts ~= oldTs then return ts > oldTs end
  return seq > (oldSeq or -1)
end

-- What apply() reads of a unit, in one HMGET (indexes below).
local HELD = { 'telemetryTsMs', 'telemetrySeq', 'statusTsMs', 'statusSeq', 'State', 'ChaSt', 'firmware',
  'severeAlarms', 'eventTsMs', 'lastSeenMs', 'lastSeq', 'health', 'site' }
local WATCHED = { 'State', 'ChaSt', 'firmware' } -- HELD[5..7]: a change is announced

-- The active alarms of a unit after one changed: sorted names (JSON list) and how many are severe.
local function activeAlarms()
  local all = redis.call('HGETALL', alarms)
  local active, severe = {}, 0
  for i = 1, #all, 2 do
    local _, _, action, severity = string.match(all[i + 1], '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
    if action == 'raised' then
      active[#active + 1] = all[i]
      if severity == 'alarm' then severe = severe + 1 end
    end
  end
  table.sort(active)
  local list = '[]'
  if #active > 0 then list = cjson.encode(active) end
  return list, #active, severe
end

-- Applies the current entry: one HMGET, one HSET, the indexes only when they move.
-- Returns 1 if it moved the unit's state, else 0.
local function apply()
  local h = redis.call('HMGET', unit, unpack(HELD))
  local set = {}
  local function put(k, v) set[#set + 1] = k; set[#set + 1] = v end
  local applied = 0
  local state, severe = str(h[5]), num(h[8]) or 0
  if kind == 'telemetry' then
    if newerThan(num(h[1]), num(h[2])) then
      put('telemetryTsMs', tsText); put('telemetrySeq', seqText)
      for k, v in pairs(f) do put(k, v) end
      applied = 1
    end
  elseif kind == 'status' then
    if newerThan(num(h[3]), num(h[4])) then
      put('statusTsMs', tsText); put('statusSeq', seqText)
      for k, v in pairs(f) do put(k, v) end
      for i, name in ipairs(WATCHED) do
        local new, old = f[name], str(h[4 + i])
        if new ~= nil and new ~= old then announce(name, old, new, tsText) end
      end
      if f.State ~= nil then state = f.State end
      applied = 1
    end
  elseif kind == 'event' then
    local alarm = f.alarm
    local held = redis.call('HGET', alarms, alarm)
    local oldTs, oldSeq, oldAction = nil, nil, nil
    if held then
      local a, b, c = string.match(held, '^([^|]*)|([^|]*)|([^|]*)|')
      oldTs, oldSeq, oldAction = num(a), num(b), c
    end
    if newerThan(oldTs, oldSeq) then
      redis.call('HSET', alarms, alarm, tsText .. '|' .. seqText .. '|' .. f.action .. '|' .. f.severity)
      if f.action ~= (oldAction or 'cleared') then announce('alarm:' .. alarm, oldAction or '', f.action, tsText) end
      local list, active
      list, active, severe = activeAlarms()
      put('alarms', list); put('activeAlarms', active); put('severeAlarms', severe)
      local lastEvent = num(h[9])
      if lastEvent == nil or ts > lastEvent then put('eventTsMs', tsText) end
      applied = 1
    end
  end

  -- Every message, valid or not, says the unit was heard from.
  local lastSeen = num(h[10])
  local seenGrew = lastSeen == nil or seen > lastSeen
  if seenGrew then put('lastSeenMs', seenText); lastSeen = seen end
  if tonumber(lastSeqText) > (num(h[11]) or -1) then put('lastSeq', lastSeqText) end
  if not h[13] then
    put('site', site); put('device', device)
    redis.call('SADD', sitesKey, site)
  end
  local health = 'online'
  if now - lastSeen > offlineAfter then
    health = 'offline'
  elseif state == 'FAULT' or severe > 0 then
    health = 'faulted'
  end
  local oldHealth = str(h[12])
  if oldHealth ~= health then put('health', health) end
  if #set > 0 then redis.call('HSET', unit, unpack(set)) end
  if seenGrew then
    redis.call('ZADD', lastseen, 'GT', lastSeen, member)
    redis.call('ZADD', siteLastseen, 'GT', lastSeen, device)
  end
  if health == 'offline' then
    if oldHealth ~= 'offline' then redis.call('ZREM', online, member) end
  elseif seenGrew or oldHealth ~= health then
    redis.call('ZADD', online, lastSeen, member)
  end
  if oldHealth ~= health then
    if oldHealth then
      redis.call('HINCRBY', siteKey, oldHealth, -1)
    else
      redis.call('HINCRBY', siteKey, 'units', 1)
      for _, name in ipairs({ 'online', 'offline', 'faulted' }) do redis.call('HINCRBY', siteKey, name, 0) end
    end
    redis.call('HINCRBY', siteKey, health, 1)
    announce('health', oldHealth or '', health, atSeenText)
  end
  return applied
end

local function applyEntry(fieldsJson)
  f = cjson.decode(fieldsJson)
  return apply()
end

local results = {}
for e = 0, entries - 1 do
  local k, a = 4 + e * KEYS_PER_ENTRY, HEAD_ARGS + e * ARGS_PER_ENTRY
  unit, alarms, siteKey, siteLastseen = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  kind, site, device = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  seqText, tsText = ARGV[a + 4], ARGV[a + 5]
  atSeqText, atSeenText, lastSeqText, seenText = ARGV[a + 7], ARGV[a + 8], ARGV[a + 9], ARGV[a + 10]
  seq, ts, seen = tonumber(seqText), tonumber(tsText), tonumber(seenText)
  member = site .. ':' .. device
  local ok, result = pcall(applyEntry, ARGV[a + 6])
  if ok then
    results[#results + 1] = result
  else
    if type(result) == 'table' then result = result.err end
    results[#results + 1] = 'error: ' .. tostring(result)
  end
end
return results
