/**
 * The monitor's Lua scripts. Each message is applied by one script call, atomically, so a unit's
 * state, its site's counts, the indexes and the change announcements never disagree.
 *
 * Monotonic in device time: a field group (telemetry, status, each alarm) is overwritten only by a
 * message with a later `(device ts, stream seq)` than the one it holds, so a late, replayed or
 * redelivered message never moves state backwards, and applying a message twice changes nothing.
 * Last-seen only grows (receive time, `ZADD … GT`).
 *
 * Numbers travel as strings and are stored as given: Lua would print a double with 14 digits.
 */

/**
 * KEYS: unit, alarms, site, sites, lastseen, site lastseen, online, changes.
 * ARGV: kind (telemetry|status|event|seen), site, device, stream seq, device ts (ms), seen (ms),
 *       now (ms), offlineAfterMs, changes max length, fields (JSON object of strings).
 * Returns 1 if the message changed the unit's state, 0 if it was older than what is there.
 */
export const APPLY_SCRIPT = `
local unit, alarms, siteKey, sitesKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local lastseen, siteLastseen, online, changes = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local kind, site, device = ARGV[1], ARGV[2], ARGV[3]
local seqText, tsText, seenText = ARGV[4], ARGV[5], ARGV[6]
local seq, ts, seen = tonumber(seqText), tonumber(tsText), tonumber(seenText)
local now, offlineAfter, maxlen = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local f = cjson.decode(ARGV[10])
local member = site .. ':' .. device
-- HGET/HMGET give false for a missing field.
local function num(v) if v then return tonumber(v) end return nil end
local function str(v) if v then return v end return nil end

local function announce(change, from, to, atTs)
  redis.call('XADD', changes, 'MAXLEN', '~', maxlen, '*', 'unit', member, 'site', site, 'device', device,
    'change', change, 'from', from or '', 'to', to or '', 'tsMs', atTs, 'seq', seqText)
end

local function newerThan(oldTs, oldSeq)
  if oldTs == nil then return true end
  if ts ~= oldTs then return ts > oldTs end
  return seq > (oldSeq or -1)
end

local function groupIsNewer(tsField, seqField)
  local old = redis.call('HMGET', unit, tsField, seqField)
  return newerThan(num(old[1]), num(old[2]))
end

local applied = 0
if kind == 'telemetry' then
  if groupIsNewer('telemetryTsMs', 'telemetrySeq') then
    local args = { 'telemetryTsMs', tsText, 'telemetrySeq', seqText }
    for k, v in pairs(f) do args[#args + 1] = k; args[#args + 1] = v end
    redis.call('HSET', unit, unpack(args))
    applied = 1
  end
elseif kind == 'status' then
  if groupIsNewer('statusTsMs', 'statusSeq') then
    local old = redis.call('HMGET', unit, 'State', 'ChaSt', 'firmware')
    local args = { 'statusTsMs', tsText, 'statusSeq', seqText }
    for k, v in pairs(f) do args[#args + 1] = k; args[#args + 1] = v end
    redis.call('HSET', unit, unpack(args))
    local watched = { 'State', 'ChaSt', 'firmware' }
    for i, name in ipairs(watched) do
      local now_ = f[name]
      if now_ ~= nil and now_ ~= (str(old[i])) then announce(name, old[i] or '', now_, tsText) end
    end
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
    redis.call('HSET', unit, 'alarms', list, 'activeAlarms', #active, 'severeAlarms', severe)
    local lastEvent = num(redis.call('HGET', unit, 'eventTsMs'))
    if lastEvent == nil or ts > lastEvent then redis.call('HSET', unit, 'eventTsMs', tsText) end
    applied = 1
  end
end

-- Every message, valid or not, says the unit was heard from.
local held = redis.call('HMGET', unit, 'lastSeenMs', 'lastSeq', 'health', 'State', 'severeAlarms')
local lastSeen = num(held[1])
if lastSeen == nil or seen > lastSeen then
  redis.call('HSET', unit, 'lastSeenMs', seenText)
  lastSeen = seen
end
if seq > (num(held[2]) or -1) then redis.call('HSET', unit, 'lastSeq', seqText) end
redis.call('HSETNX', unit, 'site', site)
redis.call('HSETNX', unit, 'device', device)
redis.call('ZADD', lastseen, 'GT', lastSeen, member)
redis.call('ZADD', siteLastseen, 'GT', lastSeen, device)
redis.call('SADD', sitesKey, site)

local state = str(held[4])
local severe = num(held[5]) or 0
if kind == 'status' or kind == 'event' then
  local fresh = redis.call('HMGET', unit, 'State', 'severeAlarms')
  state, severe = str(fresh[1]), num(fresh[2]) or 0
end
local health = 'online'
if now - lastSeen > offlineAfter then
  health = 'offline'
elseif state == 'FAULT' or severe > 0 then
  health = 'faulted'
end
if health == 'offline' then
  redis.call('ZREM', online, member)
else
  redis.call('ZADD', online, lastSeen, member)
end
local oldHealth = str(held[3])
if oldHealth ~= health then
  redis.call('HSET', unit, 'health', health)
  if oldHealth then
    redis.call('HINCRBY', siteKey, oldHealth, -1)
  else
    redis.call('HINCRBY', siteKey, 'units', 1)
    for _, h in ipairs({ 'online', 'offline', 'faulted' }) do redis.call('HINCRBY', siteKey, h, 0) end
  end
  redis.call('HINCRBY', siteKey, health, 1)
  announce('health', oldHealth or '', health, seenText)
end
return applied
`;

/**
 * The offline sweep: units in `online` whose last-seen time is older than `offlineAfterMs` become
 * offline (site counts moved, change announced). Keys of units and sites are derived from the
 * prefix, so this script needs a single Redis (not Redis Cluster).
 * KEYS: online, changes. ARGV: now (ms), offlineAfterMs, limit, changes max length, key prefix.
 * Returns how many units it looked at (a full `limit` means: call again).
 */
export const SWEEP_SCRIPT = `
local online, changes = KEYS[1], KEYS[2]
local now, offlineAfter, limit, maxlen, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local function num(v) if v then return tonumber(v) end return nil end
local function str(v) if v then return v end return nil end
local members = redis.call('ZRANGEBYSCORE', online, '-inf', '(' .. (now - offlineAfter), 'LIMIT', 0, limit)
for _, member in ipairs(members) do
  local site, device = string.match(member, '^([^:]+):(.+)$')
  local unit = prefix .. 'unit:' .. member
  local held = redis.call('HMGET', unit, 'lastSeenMs', 'health')
  local lastSeen = num(held[1]) or 0
  if now - lastSeen > offlineAfter then
    redis.call('ZREM', online, member)
    local old = str(held[2])
    if old ~= 'offline' then
      local siteKey = prefix .. 'site:' .. site
      redis.call('HSET', unit, 'health', 'offline')
      if old then redis.call('HINCRBY', siteKey, old, -1) else redis.call('HINCRBY', siteKey, 'units', 1) end
      redis.call('HINCRBY', siteKey, 'offline', 1)
      redis.call('XADD', changes, 'MAXLEN', '~', maxlen, '*', 'unit', member, 'site', site, 'device', device,
        'change', 'health', 'from', old or '', 'to', 'offline', 'tsMs', held[1] or '', 'seq', '')
    end
  else
    redis.call('ZADD', online, lastSeen, member)
  end
end
return #members
`;
