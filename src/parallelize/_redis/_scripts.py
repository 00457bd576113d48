"""The Lua scripts behind a Redis queue: each is one round trip and one atomic step.

Keys of a run (``{run}`` is a hash tag: a Redis Cluster keeps them in one slot, as
scripts need)::

    parallelize:{run}:items     stream: k (key, JSON), a (arguments, JSON); group "workers"
    parallelize:{run}:outcomes  hash: key -> outcome record (JSON): stored once
    parallelize:{run}:results   stream: k, r (the record), in the order stored
    parallelize:{run}:dead      stream: the dead letters (id, k, a, deliveries, reason, worker)
    parallelize:{run}:meta      hash: epoch, info, produced, last, input_done, ok, failed,
                                dead
    parallelize:{run}:workers   hash: consumer -> status (JSON); consumer:ok, consumer:failed
    parallelize:{run}:alive     hash: consumer -> until when it counts as alive (server time,
                                ms: its last report plus its idle_timeout)
    parallelize:{run}:started   hash: entry id -> the consumer that started an attempt of it
    parallelize:{run}:solo      hash: entry id -> the consumer running it alone
    parallelize:{run}:tries     hash: entry id -> its started attempts cut short (no outcome)
    parallelize:{run}:deaths    hash: entry id -> those of them it ran alone
    parallelize:{run}:producer  string: the producer's lock (a token, with a TTL)
    parallelize:{run}:rate      string: the shared rate limit's TAT, in microseconds
    parallelize:{run}:key:<sha1 of str(key)>
                                zset, one per key of a PerKey shared by the fleet: the
                                places held (member: a token per attempt, score: when
                                its lease ends), and ``tat``, the key's GCRA TAT (both
                                server time, ms); expires once its last score is past

An entry stays in the items stream until its outcome is stored (then it is acked
and deleted in the same step), so the stream's length is the work not yet done.

Redis's own delivery counter is not used for decisions: it counts every entry a
worker held when it died, those it had not started too (the rest of its batch, a
batch read ahead, suspects waiting to run alone). What counts is ``tries``: the
attempts that a worker marked as started (``started``, ``solo``) before it died or
went silent.

A run's epoch (``meta``'s ``epoch``: a random token, set by the first producer or
worker) fences out the processes of a deleted run. Every script that writes takes
``meta`` as its first key and the epoch its caller joined as its first argument, and
refuses (``FENCED``) when they differ: :data:`DELETE` removes ``meta`` with the rest,
so a late write of a worker that was on the run (an outcome, a heartbeat, a mark)
can never recreate keys under the name, which a new run would then take for its own
(an item with an outcome is skipped). The new run's first process sets a new epoch.
"""

from __future__ import annotations

__all__ = (
    "CLAIM",
    "DELETE",
    "ENQUEUE",
    "EPOCH",
    "HEARTBEAT",
    "INPUT_DONE",
    "KEY_GIVE",
    "KEY_RENEW",
    "KEY_TAKE",
    "RATE",
    "RATE_PAUSE",
    "REFRESH",
    "RELEASE",
    "STARTED",
    "STORE",
    "TAKE",
)

# The fence, first in every script that writes (its KEYS and ARGV as documented below
# come after meta and the epoch, which it removes): a process of a deleted run holds
# an epoch that meta no longer has.
_FENCE = """
local meta = table.remove(KEYS, 1)
if redis.call('HGET', meta, 'epoch') ~= table.remove(ARGV, 1) then
  return redis.error_reply('FENCED the run was deleted while this process was on it')
end
"""

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
    _FENCE
    + _FIELDS
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
INPUT_DONE = (
    _FENCE
    + """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('PRODUCER_LOST the producer lock was lost (expired or taken)')
end
redis.call('HSET', KEYS[1], 'input_done', '1', 'produced', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"""
)

# KEYS: producer.  ARGV: token, ttl (ms).  Keeps the producer's lock if it still has it.
REFRESH = (
    _FENCE
    + """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
)

# KEYS: meta.  ARGV: a new epoch.
# Returns the run's epoch, set to the new one if the run has none (a new run).
# Not fenced: it is how a process joins a run.
EPOCH = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
return redis.call('HGET', KEYS[1], 'epoch')
"""

# KEYS: alive, then every other key of the run.  ARGV: force (1/0), a consumer to
# leave out (the caller's own, if its part ended; else '').
# Deletes the run unless a worker is alive (its last report's window not over, by
# the server's clock) and not force. Removing meta removes the epoch: the late
# writes of the workers that were on the run are refused from then on (FENCED).
# Returns {deleted (1/0), the consumers alive}.
DELETE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local alive = {}
local seen = redis.call('HGETALL', KEYS[1])
for i = 2, #seen, 2 do
  if tonumber(seen[i]) >= now and seen[i - 1] ~= ARGV[2] then
    alive[#alive + 1] = seen[i - 1]
  end
end
if #alive > 0 and ARGV[1] ~= '1' then return {0, alive} end
redis.call('DEL', unpack(KEYS))
return {1, alive}
"""

# KEYS: items, outcomes, started.  ARGV: group, consumer, count, mark.
# Reads up to count new entries for this consumer; an entry whose key has an
# outcome already (its key was given twice) is acked and deleted, not returned. The
# first `mark` entries returned are marked as started by this consumer (the worker
# hands them to its engine at once: one round trip for both).
# Returns {entries, skipped}: entries as {id, k, a}.
TAKE = (
    _FENCE
    + """
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
    if #out <= tonumber(ARGV[4]) then redis.call('HSET', KEYS[3], entry[1], ARGV[2]) end
  end
end
if #done > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(done))
  redis.call('XDEL', KEYS[1], unpack(done))
end
return {out, #done}
"""
)

# KEYS: started (or solo).  ARGV: consumer, then id NL id... (packed).
# Marks entries as started by this consumer: sent before they are handed to its
# engine, so that a death right after the start is charged to them. On solo: marks
# a suspect as running alone here.
STARTED = (
    _FENCE
    + _FIELDS
    + """
local ids = fields(ARGV[2])
for i = 1, #ids do redis.call('HSET', KEYS[1], ids[i], ARGV[1]) end
return #ids
"""
)

# KEYS: items, outcomes, results, meta, workers, solo, deaths, started, tries.
# ARGV: group, consumer, results stream (1/0), then id NL k NL record NL ok (1/0) per
# outcome (packed).
# Stores each outcome under its key unless one is stored already (idempotent), then
# acks and deletes the entries (and their marks). Returns {newly stored ok, newly
# stored failed}.
STORE = (
    _FENCE
    + _FIELDS
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
  redis.call('HDEL', KEYS[8], unpack(ids))
  redis.call('HDEL', KEYS[9], unpack(ids))
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

# KEYS: items, meta, dead, solo, deaths, started, tries.
# ARGV: group, consumer, min idle (ms), count, max deaths, max deliveries, alone at.
# Takes over the entries idle for longer than min idle (their worker died or
# hangs). Only an attempt its worker had marked as started is charged (a try); one
# that ran alone is also a death. At max deaths, or max deliveries tries, the entry
# goes to the dead letters instead. The caller's own entries are not taken: it is
# alive (they look idle after an outage of Redis longer than min idle), and their
# idle time is reset as a heartbeat would; they are returned too, since some may
# never have reached it (a read whose answer was lost with the connection): the
# caller runs those it does not hold.
# Returns {claimed, dead, mine}: claimed as {id, k, a, alone (1/0): tries >= alone
# at}, mine as {id, k, a}.
CLAIM = (
    _FENCE
    + """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', ARGV[4])
local claimed, dead, mine = {}, 0, {}
for _, p in ipairs(pending) do
  local id, owner = p[1], p[2]
  if owner == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], owner, 0, id, 'JUSTID')
    local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
    if entry ~= nil then
      local f = entry[2]
      local k, a
      for i = 1, #f, 2 do
        if f[i] == 'k' then k = f[i + 1] elseif f[i] == 'a' then a = f[i + 1] end
      end
      mine[#mine + 1] = {id, k, a}
    end
  else
    local tries = tonumber(redis.call('HGET', KEYS[7], id) or '0')
    local deaths = tonumber(redis.call('HGET', KEYS[5], id) or '0')
    local alone = redis.call('HGET', KEYS[4], id) == owner
    if alone or redis.call('HGET', KEYS[6], id) == owner then
      tries = tries + 1
      redis.call('HSET', KEYS[7], id, tries)
      if alone then
        deaths = deaths + 1
        redis.call('HSET', KEYS[5], id, deaths)
      end
    end
    redis.call('HDEL', KEYS[4], id)
    redis.call('HDEL', KEYS[6], id)
    local reason = nil
    if deaths >= tonumber(ARGV[5]) then
      reason = 'its worker died or stopped answering ' .. deaths ..
               ' times while it ran alone (last: ' .. owner .. ')'
    elseif tries >= tonumber(ARGV[6]) then
      reason = 'started ' .. tries .. ' times without an outcome: its worker died or ' ..
               'stopped answering while it ran (last: ' .. owner .. ')'
    end
    local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
    if entry == nil then
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('HDEL', KEYS[5], id)
      redis.call('HDEL', KEYS[7], id)
    else
      local f = entry[2]
      local k, a
      for i = 1, #f, 2 do
        if f[i] == 'k' then k = f[i + 1] elseif f[i] == 'a' then a = f[i + 1] end
      end
      if reason then
        redis.call('XADD', KEYS[3], '*', 'id', id, 'k', k, 'a', a,
                   'deliveries', tries, 'reason', reason, 'worker', owner)
        redis.call('XACK', KEYS[1], ARGV[1], id)
        redis.call('XDEL', KEYS[1], id)
        redis.call('HDEL', KEYS[5], id)
        redis.call('HDEL', KEYS[7], id)
        redis.call('HINCRBY', KEYS[2], 'dead', 1)
        dead = dead + 1
      else
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
        claimed[#claimed + 1] = {id, k, a, tries >= tonumber(ARGV[7]) and 1 or 0}
      end
    end
  end
end
return {claimed, dead, mine}
"""
)

# KEYS: items, workers, alive.  ARGV: group, consumer, status (JSON), alive (1/0),
# window (ms), ids...
# Resets the idle time of the entries this consumer still owns (JUSTID: without
# counting a delivery), writes its status, and notes it alive until the window is
# over (or gone), by the server's clock: each worker's own window, so that anyone
# reading the hash (DELETE) tells the live ones without knowing their settings.
# Returns {entries another consumer owns now, workers alive in the
# window, ids pending for nobody}: the last are most often this consumer's own
# outcomes stored while the heartbeat was on its way (the caller tells them apart).
HEARTBEAT = (
    _FENCE
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[3], ARGV[2], now + tonumber(ARGV[5]))
else
  redis.call('HDEL', KEYS[3], ARGV[2])
end
local alive = 0
local seen = redis.call('HGETALL', KEYS[3])
for i = 2, #seen, 2 do
  if tonumber(seen[i]) >= now then alive = alive + 1 end
end
local taken, gone = 0, {}
for i = 6, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if not p then
    gone[#gone + 1] = ARGV[i]
  elseif p[2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    taken = taken + 1
  end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return {taken, alive, gone}
"""
)

# KEYS: items, started, solo.  ARGV: group, consumer, idle (ms), ids...
# Gives back entries this consumer holds without an outcome (it stops): marked idle
# for long, so that the others take them over at their next look, not after
# idle_timeout. Only those it still owns. Their attempts here are not charged: they
# were cancelled by a worker alive enough to give them back.
RELEASE = (
    _FENCE
    + """
local n = 0
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if p and p[2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('HDEL', KEYS[3], ARGV[i])
    n = n + 1
  end
end
return n
"""
)

# KEYS: rate.  ARGV: interval (us), tolerance (us), count.
# GCRA over the server's clock: reserves count slots, returns each one's start as
# microseconds from now (0: at once). Every worker of the run shares the one TAT.
RATE = (
    _FENCE
    + """
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
)

# KEYS: rate.  ARGV: seconds to pause (us), tolerance (us).
# A service said "Retry-After": nobody of the run starts a call before then.
RATE_PAUSE = (
    _FENCE
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
tat = math.max(tat, now + tonumber(ARGV[1]) + tonumber(ARGV[2]))
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', 3600000)
return 1
"""
)


# -- limits per key, kept for the fleet (_per_key) --------------------------------------
# A key's zset holds its places taken (a token per attempt, scored with when its lease
# ends) and the member 'tat', scored with the key's GCRA TAT: times are the server's, in
# ms (a float: us precision). A score in the past means nothing (an expired lease, a
# TAT that no longer holds anyone back), so one ZREMRANGEBYSCORE drops them all; and
# the key expires once its last score has passed (a second later): a finished or
# crashed run leaves nothing behind.
_KEYS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local function expire(key)
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if top[2] then
    redis.call('PEXPIRE', key, string.format('%.0f', math.ceil(tonumber(top[2]) - now) + 1000))
  end
end
local function score(ms) return string.format('%.3f', ms) end
-- Gives back a place (token '' for none); a pause (a Retry-After, us) moves the key's
-- TAT on, so that no process of the run starts an attempt of the key before it ends.
local function give(key, token, pause, tolerance)
  if token ~= '' then redis.call('ZREM', key, token) end
  if pause > 0 then
    local tat = tonumber(redis.call('ZSCORE', key, 'tat') or '0')
    redis.call('ZADD', key, score(math.max(tat, now + (pause + tolerance) / 1000)), 'tat')
    expire(key)
  end
end
-- Gives back the places of KEYS[first...] packed in f: token NL pause NL tolerance each.
local function give_all(f, first, count)
  for i = 1, count do
    local j = 3 * (i - 1)
    give(KEYS[first + i - 1], f[j + 1], tonumber(f[j + 2]), tonumber(f[j + 3]))
  end
end
"""

# KEYS: a key's zset per place given back, then one per ask.  ARGV: places given back,
# their fields (packed, as KEY_GIVE's), then per ask: token NL most (0: no concurrency
# limit) NL lease (ms) NL interval (us, 0: no rate) NL tolerance (us: (burst - 1) *
# interval) (packed; token '' for none): the asks of many attempts at once.
# First gives back the places released meanwhile (so that a process is not refused
# its own places, given back a moment ago). Then for each ask in turn: takes a place
# of its key if fewer than most are held (leases not ended) and the key's GCRA lets
# an attempt go now: adds the token (scored with the lease's end) and moves the TAT
# on. Returns per ask {0, 0} when taken; {1, us until the first lease ends} when the
# key's places are all held; {2, us until the rate lets one go}. A retry of a call
# whose answer was lost finds its token: taken.
KEY_TAKE = (
    _FENCE
    + _FIELDS
    + _KEYS
    + """
local function take(key, token, most, lease, interval, tolerance)
  if token ~= '' and redis.call('ZSCORE', key, token) then return {0, 0} end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', score(now))
  local tat = tonumber(redis.call('ZSCORE', key, 'tat') or '0')
  if most > 0 then
    local held = redis.call('ZCARD', key)
    if tat > 0 then held = held - 1 end
    if held >= most then
      local first = redis.call('ZRANGE', key, 0, 1, 'WITHSCORES')
      local ends = first[2]
      if first[1] == 'tat' then ends = first[4] end
      return {1, math.ceil((tonumber(ends) - now) * 1000)}
    end
  end
  local go = math.max(tat - tolerance, now)
  if go > now then return {2, math.ceil((go - now) * 1000)} end
  if interval > 0 then redis.call('ZADD', key, score(math.max(tat, now) + interval), 'tat') end
  if most > 0 then redis.call('ZADD', key, score(now + lease), token) end
  expire(key)
  return {0, 0}
end
local given = tonumber(ARGV[1])
give_all(fields(ARGV[2]), 1, given)
local f = fields(ARGV[3])
local out = {}
for i = 1, #KEYS - given do
  local j = 5 * (i - 1)
  out[i] = take(KEYS[given + i], f[j + 1], tonumber(f[j + 2]), tonumber(f[j + 3]),
                tonumber(f[j + 4]) / 1000, tonumber(f[j + 5]) / 1000)
end
return out
"""
)

# KEYS: a key's zset per place given back.  ARGV: token NL pause (us) NL tolerance
# (us) per place (packed; token '' for none).
# Gives the places back; a pause (a Retry-After) moves the key's TAT on, so that no
# process of the run starts an attempt of the key before it is over.
KEY_GIVE = (
    _FENCE
    + _FIELDS
    + _KEYS
    + """
give_all(fields(ARGV[1]), 1, #KEYS)
return #KEYS
"""
)

# KEYS: a key's zset per place held.  ARGV: token NL lease (ms) per place (packed).
# Keeps the places this process holds: their leases end a lease from now. A place
# whose lease ended already (this process was silent for longer) is not taken again.
KEY_RENEW = (
    _FENCE
    + _FIELDS
    + _KEYS
    + """
local f = fields(ARGV[1])
local kept = 0
for i = 1, #KEYS do
  local key = KEYS[i]
  kept = kept + redis.call('ZADD', key, 'XX', 'GT', 'CH', score(now + tonumber(f[2 * i])),
                           f[2 * i - 1])
  expire(key)
end
return kept
"""
)
