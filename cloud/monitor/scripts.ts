/**
 * The monitor's Lua scripts. A batch of messages is applied by a few script calls (chunks of
 * `APPLY_CHUNK`), each message atomically with everything it touches, so a unit's state, its
 * site's counts, the indexes and the change announcements never disagree.
 *
 * Monotonic in device time: a field group (telemetry, status, each alarm) is overwritten only by a
 * message with a later `(device ts, stream seq)` than the one it holds, so a late, replayed or
 * redelivered message never moves state backwards, and applying a message twice changes nothing.
 * Last-seen only grows (receive time, `ZADD … GT`).
 *
 * Numbers travel as strings and are stored as given: Lua would print a double with 14 digits.
 *
 * The scripts derive the unit and site keys from the key prefix (cloud/monitor/keys.ts), so they
 * need a single Redis (not Redis Cluster).
 */

import type { ApplyEntry } from './conflate.ts';

/** Values per entry in APPLY_SCRIPT's ARGV (applyArgs). */
export const APPLY_ARGS_PER_ENTRY = 10;

/** An entry's values in APPLY_SCRIPT's ARGV, in the order the script reads them. */
export function applyArgs(e: ApplyEntry): string[] {
  const { kind, site, device, seq, tsMs, fields } = e.content;
  return [
    kind,
    site,
    device,
    String(seq),
    String(tsMs),
    JSON.stringify(fields),
    String(e.atSeq),
    String(e.atSeenMs),
    String(e.lastSeq),
    String(e.lastSeenMs),
  ];
}

/**
 * Entries per APPLY_SCRIPT call: a call runs alone on Redis, so this bounds how long other
 * clients (dashboards) wait behind it (2.5–3 ms on the benchmark machine), while sparing a command
 * per message.
 */
export const APPLY_CHUNK = 100;

/**
 * KEYS: sites, lastseen, online, changes.
 * ARGV: key prefix, now (ms), offlineAfterMs, changes max length, then per entry
 *       (APPLY_ARGS_PER_ENTRY, cloud/monitor/conflate.ts): kind (telemetry|status|event|seen),
 *       site, device, stream seq, device ts (ms), fields (JSON object of strings) of its content;
 *       stream seq and receive time (ms) of its first message, which a change it makes names; the
 *       highest stream seq and the latest receive time it stands for. A single message is all of these.
 * Returns per entry: 1 if it changed the unit's state, 0 if it was older than what is there, or
 * the error text if applying it failed (the other entries are applied all the same).
 */
export const APPLY_SCRIPT = `
local sitesKey, lastseen, online, changes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, now, offlineAfter, maxlen = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
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

-- Applies the current message: one HMGET, one HSET, the indexes only when they move.
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

local function applyMessage(fieldsJson)
  f = cjson.decode(fieldsJson)
  return apply()
end

local results = {}
for i = 5, #ARGV, ${APPLY_ARGS_PER_ENTRY} do
  kind, site, device = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  seqText, tsText = ARGV[i + 3], ARGV[i + 4]
  atSeqText, atSeenText, lastSeqText, seenText = ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], ARGV[i + 9]
  seq, ts, seen = tonumber(seqText), tonumber(tsText), tonumber(seenText)
  member = site .. ':' .. device
  unit = prefix .. 'unit:' .. member
  alarms = unit .. ':alarms'
  siteKey = prefix .. 'site:' .. site
  siteLastseen = prefix .. 'lastseen:' .. site
  local ok, result = pcall(applyMessage, ARGV[i + 5])
  if ok then
    results[#results + 1] = result
  else
    if type(result) == 'table' then result = result.err end
    results[#results + 1] = 'error: ' .. tostring(result)
  end
end
return results
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
