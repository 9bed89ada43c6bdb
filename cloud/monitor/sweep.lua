--[[
  The offline sweep over candidates the caller found in `online` with a last-seen score older than
  offlineAfterMs (ZRANGEBYSCORE). Each candidate is checked again here, atomically: one still in
  `online` whose unit was not heard from for offlineAfterMs becomes offline (health set, site counts
  moved, change announced); one heard from since gets its current last-seen score back.

  Input (sweepCall in cloud/monitor/scripts.ts builds both lists):
    KEYS[1]  online              (sorted set)  units not offline
    KEYS[2]  changes             (stream)      one entry per change
    then per candidate, 2 keys (KEYS_PER_UNIT):
      unit                       (hash)        the unit's state
      site                       (hash)        units, online, offline, faulted

    ARGV[1]  now (ms)
    ARGV[2]  offlineAfterMs
    ARGV[3]  changes stream max length (approximate)
    then per candidate, 2 values (ARGS_PER_UNIT): site, device

  Output: how many units it marked offline.

  Every key is passed in KEYS; on Redis Cluster they share a slot when the key prefix is a hash tag
  (apply.lua says why it must be).
]]
local KEYS_PER_UNIT, ARGS_PER_UNIT, HEAD_ARGS = 2, 2, 3
local online, changes = KEYS[1], KEYS[2]
local now, offlineAfter, maxlen = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local units = (#KEYS - 2) / KEYS_PER_UNIT
if units ~= math.floor(units) or #ARGV ~= HEAD_ARGS + units * ARGS_PER_UNIT then
  return redis.error_reply('ERR sweep: ' .. #KEYS .. ' keys and ' .. #ARGV .. ' arguments do not make whole units')
end

local function num(v) if v then return tonumber(v) end return nil end
local function str(v) if v then return v end return nil end

local marked = 0
for u = 0, units - 1 do
  local k, a = 2 + u * KEYS_PER_UNIT, HEAD_ARGS + u * ARGS_PER_UNIT
  local unit, siteKey = KEYS[k + 1], KEYS[k + 2]
  local site, device = ARGV[a + 1], ARGV[a + 2]
  local member = site .. ':' .. device
  -- Applied since the caller looked: an entry that marked it offline took it out of `online`.
  if redis.call('ZSCORE', online, member) then
    local held = redis.call('HMGET', unit, 'lastSeenMs', 'health')
    local lastSeen = num(held[1]) or 0
    if now - lastSeen > offlineAfter then
      redis.call('ZREM', online, member)
      local old = str(held[2])
      if old ~= 'offline' then
        redis.call('HSET', unit, 'health', 'offline')
        if old then redis.call('HINCRBY', siteKey, old, -1) else redis.call('HINCRBY', siteKey, 'units', 1) end
        redis.call('HINCRBY', siteKey, 'offline', 1)
        redis.call('XADD', changes, 'MAXLEN', '~', maxlen, '*', 'unit', member, 'site', site, 'device', device,
          'change', 'health', 'from', old or '', 'to', 'offline', 'tsMs', held[1] or '', 'seq', '')
        marked = marked + 1
      end
    else
      redis.call('ZADD', online, lastSeen, member)
    end
  end
end
return marked
