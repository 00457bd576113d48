"""The Lua scripts behind a Redis queue: each is one round trip and one atomic step.

Keys of a run (``{run}`` is a hash tag: a Redis Cluster keeps them in one slot, as
scripts need)::

    parallelize:{run}:items     stream: k (key, JSON), a (arguments, JSON); group "workers"
    parallelize:{run}:outcomes  hash: key -> outcome record (JSON): stored once
    parallelize:{run}:results   stream: k, r (the record), in the order stored
    parallelize:{run}:dead      stream: the dead letters (id, k, a, deliveries, reason, worker)
    parallelize:{run}:meta      hash: info, produced, last, input_done, ok, failed, dead
    parallelize:{run}:workers   hash: consumer -> status (JSON); consumer:ok, consumer:failed
    parallelize:{run}:alive     hash: consumer -> when it last reported (server time, ms)
    parallelize:{run}:solo      hash: entry id -> the consumer running it alone
    parallelize:{run}:deaths    hash: entry id -> workers it took down while alone
    parallelize:{run}:producer  string: the producer's lock (a token, with a TTL)
    parallelize:{run}:rate      string: the shared rate limit's TAT, in microseconds

An entry stays in the items stream until its outcome is stored (then it is acked
and deleted in the same step), so the stream's length is the work not yet done.
"""

from __future__ import annotations

__all__ = (
    "CLAIM",
    "ENQUEUE",
    "HEARTBEAT",
    "INPUT_DONE",
    "RATE",
    "RATE_PAUSE",
    "REFRESH",
    "RELEASE",
    "STORE",
    "TAKE",
)

# Fields packed into one argument, one a line: one argument per batch, not four per
# item, spares the client most of its cost per item (redis-py packs every argument
# in Python). None of the fields holds a newline: ids, JSON texts (JSON escapes
# newlines in strings), 1/0.
_FIELDS = """
local function fields(s)
  local out, pos = {}, 1
  while true do
    local nl = string.find(s, '\\n', pos, true)
    if not nl then
      out[#out + 1] = string.sub(s, pos)
      return out
    end
    out[#out + 1] = string.sub(s, pos, nl - 1)
    pos = nl + 1
  end
end
"""

# KEYS: items, meta, producer.  ARGV: token, produced before, last digest, then
# k1 NL a1 NL k2 NL a2... (packed).
# Adds the entries if the caller still holds the producer's lock and agrees on how
# many were produced; returns the stream's length (the work not yet done).
ENQUEUE = (
    _FIELDS
    + """
local items = fields(ARGV[4])
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return redis.error_reply('PRODUCER_LOST the producer lock was lost (expired or taken)')
end
local produced = tonumber(redis.call('HGET', KEYS[2], 'produced') or '0')
if produced ~= tonumber(ARGV[2]) then
  -- A retry of a call whose answer was lost: done already.
  if produced == tonumber(ARGV[2]) + #items / 2
     and redis.call('HGET', KEYS[2], 'last') == ARGV[3] then
    return redis.call('XLEN', KEYS[1])
  end
  return redis.error_reply('PRODUCER_LOST another producer added items meanwhile')
end
local n = 0
for i = 1, #items, 2 do
  redis.call('XADD', KEYS[1], '*', 'k', items[i], 'a', items[i + 1])
  n = n + 1
end
redis.call('HSET', KEYS[2], 'produced', produced + n, 'last', ARGV[3])
return redis.call('XLEN', KEYS[1])
"""
)

# KEYS: meta, producer.  ARGV: token, produced.
INPUT_DONE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('PRODUCER_LOST the producer lock was lost (expired or taken)')
end
redis.call('HSET', KEYS[1], 'input_done', '1', 'produced', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: producer.  ARGV: token, ttl (ms).  Keeps the producer's lock if it still has it.
REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: items, outcomes.  ARGV: group, consumer, count.
# Reads up to count new entries for this consumer; an entry whose key has an
# outcome already (its key was given twice) is acked and deleted, not returned.
# Returns {entries, skipped}: entries as {id, k, a}.
TAKE = """
local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                        'STREAMS', KEYS[1], '>')
if not read then return {{}, 0} end
local out, done = {}, {}
for _, entry in ipairs(read[1][2]) do
  local f = entry[2]
  local k, a
  for i = 1, #f, 2 do
    if f[i] == 'k' then k = f[i + 1] elseif f[i] == 'a' then a = f[i + 1] end
  end
  if redis.call('HEXISTS', KEYS[2], k) == 1 then
    done[#done + 1] = entry[1]
  else
    out[#out + 1] = {entry[1], k, a}
  end
end
if #done > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(done))
  redis.call('XDEL', KEYS[1], unpack(done))
end
return {out, #done}
"""

# KEYS: items, outcomes, results, meta, workers, solo, deaths.
# ARGV: group, consumer, results stream (1/0), then id NL k NL record NL ok (1/0) per
# outcome (packed).
# Stores each outcome under its key unless one is stored already (idempotent), then
# acks and deletes the entries. Returns {newly stored ok, newly stored failed}.
STORE = (
    _FIELDS
    + """
local f = fields(ARGV[4])
local ok, failed, ids = 0, 0, {}
for i = 1, #f, 4 do
  local id, k, record = f[i], f[i + 1], f[i + 2]
  ids[#ids + 1] = id
  if record ~= '' and redis.call('HSETNX', KEYS[2], k, record) == 1 then
    if ARGV[3] == '1' then redis.call('XADD', KEYS[3], '*', 'k', k, 'r', record) end
    if f[i + 3] == '1' then ok = ok + 1 else failed = failed + 1 end
  end
end
if #ids > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
  redis.call('XDEL', KEYS[1], unpack(ids))
  redis.call('HDEL', KEYS[6], unpack(ids))
  redis.call('HDEL', KEYS[7], unpack(ids))
end
if ok > 0 then
  redis.call('HINCRBY', KEYS[4], 'ok', ok)
  redis.call('HINCRBY', KEYS[5], ARGV[2] .. ':ok', ok)
end
if failed > 0 then
  redis.call('HINCRBY', KEYS[4], 'failed', failed)
  redis.call('HINCRBY', KEYS[5], ARGV[2] .. ':failed', failed)
end
return {ok, failed}
"""
)

# KEYS: items, meta, dead, solo, deaths.
# ARGV: group, consumer, min idle (ms), count, max deaths, max deliveries.
# Takes over the entries idle for longer than min idle (their worker died or
# hangs). An entry that was running alone when its worker went silent is charged
# one death; at max deaths, or after max deliveries in all, it goes to the dead
# letters instead. Returns {claimed, dead}: claimed as {id, k, a, deliveries}.
CLAIM = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', ARGV[4])
local claimed, dead = {}, 0
for _, p in ipairs(pending) do
  local id, owner, deliveries = p[1], p[2], tonumber(p[4])
  local deaths = tonumber(redis.call('HGET', KEYS[5], id) or '0')
  if redis.call('HDEL', KEYS[4], id) == 1 then
    deaths = deaths + 1
    redis.call('HSET', KEYS[5], id, deaths)
  end
  local reason = nil
  if deaths >= tonumber(ARGV[5]) then
    reason = 'its worker died or stopped answering ' .. deaths ..
             ' times while it ran alone (last: ' .. owner .. ')'
  elseif deliveries >= tonumber(ARGV[6]) then
    reason = 'delivered ' .. deliveries .. ' times without an outcome (last: ' .. owner .. ')'
  end
  local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
  if entry == nil then
    redis.call('XACK', KEYS[1], ARGV[1], id)
  else
    local f = entry[2]
    local k, a
    for i = 1, #f, 2 do
      if f[i] == 'k' then k = f[i + 1] elseif f[i] == 'a' then a = f[i + 1] end
    end
    if reason then
      redis.call('XADD', KEYS[3], '*', 'id', id, 'k', k, 'a', a,
                 'deliveries', deliveries, 'reason', reason, 'worker', owner)
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
      redis.call('HDEL', KEYS[5], id)
      redis.call('HINCRBY', KEYS[2], 'dead', 1)
      dead = dead + 1
    else
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], id)
      claimed[#claimed + 1] = {id, k, a, deliveries + 1}
    end
  end
end
return {claimed, dead}
"""

# KEYS: items, workers, alive.  ARGV: group, consumer, status (JSON), alive (1/0),
# window (ms), ids...
# Resets the idle time of the entries this consumer still owns (JUSTID: without
# counting a delivery), writes its status, and notes it alive (or gone) by the
# server's clock. Returns {entries it no longer owns, workers alive in the window}.
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[3], ARGV[2], now)
else
  redis.call('HDEL', KEYS[3], ARGV[2])
end
local alive = 0
local seen = redis.call('HGETALL', KEYS[3])
for i = 2, #seen, 2 do
  if tonumber(seen[i]) >= now - tonumber(ARGV[5]) then alive = alive + 1 end
end
local lost = 0
for i = 6, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if p and p[2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost = lost + 1
  end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return {lost, alive}
"""

# KEYS: items.  ARGV: group, consumer, idle (ms), ids...
# Gives back entries this consumer holds without an outcome (it stops): marked idle
# for long, so that the others take them over at their next look, not after
# idle_timeout. Only those it still owns.
RELEASE = """
local n = 0
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if p and p[2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    n = n + 1
  end
end
return n
"""

# KEYS: rate.  ARGV: interval (us), tolerance (us), count.
# GCRA over the server's clock: reserves count slots, returns each one's start as
# microseconds from now (0: at once). Every worker of the run shares the one TAT.
RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local out = {}
for i = 1, tonumber(ARGV[3]) do
  local go = math.max(tat - tolerance, now)
  tat = math.max(tat, go) + interval
  out[i] = go - now
end
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', 3600000)
return out
"""

# KEYS: rate.  ARGV: seconds to pause (us), tolerance (us).
# A service said "Retry-After": nobody of the run starts a call before then.
RATE_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
tat = math.max(tat, now + tonumber(ARGV[1]) + tonumber(ARGV[2]))
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', 3600000)
return 1
"""
