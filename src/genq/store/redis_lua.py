"""The Lua scripts that make each change of the Redis store one atomic step.

Keys, under a prefix P (default ``genq``):

======================  =====================================================================
``P:job:<id>``          hash: the job's fields; ``seq`` is its last event id, ``qm`` its queue
                        member, ``lease_token`` its fencing token, ``lease_at`` when its
                        lease was last granted or renewed (reclaim after an outage)
``P:ev:<id>``           stream: the job's event log, entry ids ``0-1``, ``0-2``... (= SSE ids)
``P:q:<fn>``            sorted set of ready jobs: score ``-priority``, member
                        ``<16 hex: fair tag><16 hex: arrival>:<id>``, so equal scores go
                        by fair tag, then arrival (fair share; tag 0 with it off)
``P:fair:<fn>``         hash, fair share's state per priority level ``l`` of the function:
                        ``v:<l>`` its virtual time, and per owner ``o`` with jobs queued
                        there ``t:<l>:<o>`` its last job's tag, ``n:<l>:<o>`` how many
``P:oqueued``,          hashes: owner -> its queued jobs (``max_queued``) / its running
``P:orunning``          jobs, across all workers (``max_running``), kept by every script
                        that moves a job in or out of the queue or a run
``P:delayed:<fn>``      sorted set of retries waiting for their delay: score ``not_before``
``P:leases``            sorted set of running jobs by ``lease_until`` (reclaim of lapsed leases)
``P:running``           hash: function -> running jobs, across all workers (``max_running``)
``P:expiry``            sorted set of never-started queued jobs by ``expires_at``
``P:idem``              hash: ``owner\\nkey`` -> job id (idempotency keys)
``P:inflight``          hash: ``owner\\ncache_key`` -> the live job (de-duplication)
``P:cache``             hash: ``cache_key`` -> the latest succeeded job (result cache)
``P:idx:all``,          sorted sets of job ids by ``created_at`` (listing, newest first)
``P:idx:owner:<o>``
``P:fns``               set of function names that ever had a queue
``P:lastclaim:<w>``     ``nonce:id`` of worker w's latest claim (a retried claim gets it back)
``P:art:<id>``          hash: an artifact's metadata and bytes
``P:arts:<job id>``     set of the job's artifact ids (deleted with the job)
``P:finished``          sorted set of finished jobs by ``finished_at`` (retention, and the
                        dashboard's recent jobs)
``P:tickets:<id>``      hash: each submission's ticket on the job -> '1' held, '0' let go;
                        the job hash's ``callers`` counts those held (Store.cancel)
``P:totals``            hash: ``owner\\nfunction\\nstatus`` -> jobs ended so far (dashboard)
``P:workers``,          hash of worker reports (JSON) and a sorted set of when each expires
``P:workers:until``
``P:holders:<a>``       sorted set of the workers holding the model of affinity key ``a``
                        (warm routing): score = when the worker's report expires
======================  =====================================================================

Channels: ``P:work`` (a function has claimable work), ``P:cancel`` (a running job's id),
``P:jobs`` (a job's whole hash after each status change: the dashboards' feed).

Every script is safe to run twice (redis-py retries a command whose connection broke,
and the first attempt may have been applied): submit finds its own job id, claim its own
nonce, append its own first event id, and the others find the change already made.
Each script's own comment says which genq rule (``genq.store.rules``) it applies; the
event payloads are built in Python there, except the three whose numbers only the script
knows (queued's position, started's attempt, a cache hit's source), which are checked
against the SQLite store by the shared contract suite.
"""

from __future__ import annotations

# Helpers shared by every script. ARGV[1] is always the key prefix; ``now`` strings come
# from the caller's clock (the machines of a cluster keep time with NTP, and a lease of
# 30 s leaves room for skew), and are stored as given, without Lua float formatting.
_PRELUDE = r"""
local P = ARGV[1]
local function job_key(id) return P .. ':job:' .. id end

local function append_event(id, etype, data, ts)
  local seq = redis.call('HINCRBY', job_key(id), 'seq', 1)
  redis.call('XADD', P .. ':ev:' .. id, '0-' .. seq, 't', etype, 'd', data, 'ts', ts)
  return seq
end

local function announce(id)
  -- Only when some front end listens: encoding the whole hash costs more than the rest.
  local channel = P .. ':jobs'
  if redis.call('PUBSUB', 'NUMSUB', channel)[2] > 0 then
    redis.call('PUBLISH', channel, cjson.encode(redis.call('HGETALL', job_key(id))))
  end
end

-- Fair share (the rule: genq.store.sqlite_queues): owner's next job at fn's priority
-- level gets the tag max(V, its last tag) + 1, its last tag forgotten once it has no job
-- queued there; a claim moves V to the claimed job's tag - 1.
local function fair_tag(fn, priority, owner)
  local h, l = P .. ':fair:' .. fn, tostring(tonumber(priority))
  local tag = tonumber(redis.call('HGET', h, 'v:' .. l) or '0')
  if redis.call('HINCRBY', h, 'n:' .. l .. ':' .. owner, 1) > 1 then
    tag = math.max(tag, tonumber(redis.call('HGET', h, 't:' .. l .. ':' .. owner) or '0'))
  end
  redis.call('HSET', h, 't:' .. l .. ':' .. owner, tag + 1)
  return tag + 1
end

-- A queue member's job id and fair tag: '<16 hex tag><16 hex arrival>:<id>', or
-- '<16 hex arrival>:<id>' as queued by a genq from before fair share (tag 0)
local function member_id(m)
  if string.sub(m, 17, 17) == ':' then return string.sub(m, 18) end
  return string.sub(m, 34)
end

local function member_tag(m)
  if string.sub(m, 17, 17) == ':' then return 0 end
  return tonumber(string.sub(m, 1, 16), 16)
end

local function count_down(hash, field)  -- dropped at 0 (or below: jobs from before it)
  if redis.call('HINCRBY', hash, field, -1) <= 0 then redis.call('HDEL', hash, field) end
end

local function leave_queue(id, fn, member, priority, owner)  -- claimed, or ended queued
  redis.call('ZREM', P .. ':q:' .. fn, member)
  redis.call('ZREM', P .. ':delayed:' .. fn, id)
  local h, l = P .. ':fair:' .. fn, tostring(tonumber(priority))
  if redis.call('HINCRBY', h, 'n:' .. l .. ':' .. owner, -1) <= 0 then
    redis.call('HDEL', h, 'n:' .. l .. ':' .. owner, 't:' .. l .. ':' .. owner)
  end
  count_down(P .. ':oqueued', owner)
end

local function enqueue(id, fn, priority, owner, fair, not_before, now)
  -- a new place at the back of its priority (its owner's turn under fair share), like
  -- a new submission; returns its queue member
  local tag = fair_tag(fn, priority, owner)
  if fair ~= '1' then tag = 0 end
  redis.call('HINCRBY', P .. ':oqueued', owner, 1)
  local member = string.format('%016x%016x', tag, redis.call('INCR', P .. ':seq')) .. ':' .. id
  redis.call('HSET', job_key(id), 'status', 'queued', 'qm', member, 'not_before', not_before)
  redis.call('SADD', P .. ':fns', fn)
  if tonumber(not_before) > tonumber(now) then
    redis.call('ZADD', P .. ':delayed:' .. fn, not_before, id)
  else
    redis.call('ZADD', P .. ':q:' .. fn, -tonumber(priority), member)
    redis.call('PUBLISH', P .. ':work', fn)
  end
  return member
end

local function leave_running(id, fn)
  redis.call('HINCRBY', P .. ':running', fn, -1)
  count_down(P .. ':orunning', redis.call('HGET', job_key(id), 'owner'))
  redis.call('ZREM', P .. ':leases', id)
end

local function count_finished(owner, fn, status)  -- Store.finished_stats' totals
  redis.call('HINCRBY', P .. ':totals', owner .. '\n' .. fn .. '\n' .. status, 1)
end

local function end_job(id, status, data, result, err, now)
  local k = job_key(id)
  local j = redis.call('HMGET', k, 'status', 'function', 'qm', 'owner', 'cache_key',
                       'priority')
  local fn = j[2]
  if j[1] == 'queued' then
    leave_queue(id, fn, j[3], j[6], j[4])
  elseif j[1] == 'running' then
    leave_running(id, fn)
  end
  redis.call('ZREM', P .. ':expiry', id)
  redis.call('HSET', k, 'status', status, 'finished_at', now, 'result', result, 'error', err,
             'lease_until', '', 'qm', '')
  append_event(id, status, data, now)
  if j[5] ~= '' then
    local field = j[4] .. '\n' .. j[5]
    if redis.call('HGET', P .. ':inflight', field) == id then
      redis.call('HDEL', P .. ':inflight', field)
    end
    if status == 'succeeded' then redis.call('HSET', P .. ':cache', j[5], id) end
  end
  redis.call('ZADD', P .. ':finished', now, id)
  count_finished(j[4], fn, status)
  announce(id)
end

local function is_live(status) return status == 'queued' or status == 'running' end
"""

# ARGV: P, now, id, function, owner, priority, input (canonical JSON), created_at,
# cache_key, idempotency_key, max_queue, cache_ttl ('inf' = forever), dedupe, expires_at,
# owner_max_queued (''), fair ('1'/'0'), then the job hash as field, value pairs.
# Returns {'new', hash, position} | {'idempotent'|'deduplicated'|'cached', hash} |
# {'conflict', other id} | {'full', depth} | {'owner_full', the owner's queued jobs}.
SUBMIT = _PRELUDE + r"""
local now, id, fn, owner, priority = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local input, created, ckey, idem = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local max_queue, ttl, dedupe, expires = ARGV[11], ARGV[12], ARGV[13], ARGV[14]
local owner_max, fair = ARGV[15], ARGV[16]
local k = job_key(id)
if redis.call('EXISTS', k) == 1 then  -- this very submission, retried
  return {'new', redis.call('HGETALL', k), 0}
end
if idem ~= '' then
  local prev = redis.call('HGET', P .. ':idem', owner .. '\n' .. idem)
  if prev and redis.call('EXISTS', job_key(prev)) == 0 then  -- deleted by retention
    redis.call('HDEL', P .. ':idem', owner .. '\n' .. idem)
    prev = false
  end
  if prev then
    local p = redis.call('HMGET', job_key(prev), 'function', 'input')
    if p[1] ~= fn or p[2] ~= input then return {'conflict', prev} end
    return {'idempotent', redis.call('HGETALL', job_key(prev))}
  end
end

-- this submission's ticket, among the job hash's pairs (Store.cancel's ``ticket``)
local function submitted_ticket()
  for i = 17, #ARGV, 2 do if ARGV[i] == 'ticket' then return ARGV[i + 1] end end
  return ''
end

local function store_job()
  redis.call('HSET', k, unpack(ARGV, 17))  -- callers: 1 with a ticket
  local ticket = submitted_ticket()
  if ticket ~= '' then redis.call('HSET', P .. ':tickets:' .. id, ticket, '1') end
  redis.call('ZADD', P .. ':idx:all', created, id)
  redis.call('ZADD', P .. ':idx:owner:' .. owner, created, id)
  if idem ~= '' then redis.call('HSET', P .. ':idem', owner .. '\n' .. idem, id) end
end

if ckey ~= '' then
  if dedupe == '1' then
    local live = redis.call('HGET', P .. ':inflight', owner .. '\n' .. ckey)
    local l = live and redis.call('HMGET', job_key(live), 'status', 'cancel_requested')
    -- not a job being cancelled: it must not take new submissions with it
    if live and is_live(l[1]) and l[2] ~= '1' then
      local ticket = submitted_ticket()  -- one more holder (once, if run twice)
      if ticket ~= '' and redis.call('HSETNX', P .. ':tickets:' .. live, ticket, '1') == 1 then
        redis.call('HINCRBY', job_key(live), 'callers', 1)
      end
      return {'deduplicated', redis.call('HGETALL', job_key(live))}
    end
  end
  if ttl ~= '' then
    local hit = redis.call('HGET', P .. ':cache', ckey)
    if hit then
      local h = redis.call('HMGET', job_key(hit), 'status', 'finished_at', 'result')
      if h[1] == 'succeeded'
          and (ttl == 'inf' or tonumber(h[2]) >= tonumber(now) - tonumber(ttl)) then
        -- rules.cached_event: a job of its own, already succeeded with the cached result
        store_job()
        redis.call('HSET', k, 'status', 'succeeded', 'started_at', now, 'finished_at', now,
                   'result', h[3])
        append_event(id, 'succeeded', '{"result":' .. h[3] .. ',"cached_from":"' .. hit
                     .. '"}', now)
        -- the newest job holding the result answers next, as on SQLite: a result in
        -- use outlives the retention of the job that first computed it
        redis.call('HSET', P .. ':cache', ckey, id)
        redis.call('ZADD', P .. ':finished', now, id)
        count_finished(owner, fn, 'succeeded')
        announce(id)
        return {'cached', redis.call('HGETALL', k)}
      end
    end
  end
end

if owner_max ~= '' then
  local queued = tonumber(redis.call('HGET', P .. ':oqueued', owner) or '0')
  if queued >= tonumber(owner_max) then return {'owner_full', queued} end
end
local depth = redis.call('ZCARD', P .. ':q:' .. fn) + redis.call('ZCARD', P .. ':delayed:' .. fn)
if max_queue ~= '' and depth >= tonumber(max_queue) then return {'full', depth} end
store_job()
if ckey ~= '' then redis.call('HSET', P .. ':inflight', owner .. '\n' .. ckey, id) end
if expires ~= '' then redis.call('ZADD', P .. ':expiry', expires, id) end
local member = enqueue(id, fn, priority, owner, fair, '0', now)
-- its rank: behind what claims take first (higher priority, smaller fair tag, older)
local position = redis.call('ZRANK', P .. ':q:' .. fn, member) + 1
append_event(id, 'queued', '{"position":' .. position .. '}', now)  -- rules.queued_event
announce(id)
return {'new', redis.call('HGETALL', k), position}
"""

# ARGV: P, now, worker, lease_until, nonce, expired event data, count, window, the number
# of affinity keys the worker holds and those keys, then quads of function, limit ('' =
# none: the cluster-wide max_running), want (at most this many of it now), bound ('' =
# no warm routing, else seconds: Warmth.waits). Claims up to ``count`` jobs, each the
# best of all the functions (highest priority, then fair tag, then oldest), each
# function's candidate chosen by warm routing when it has a bound (genq.store.routing:
# the same rule, over the first ``window`` members at the head score, holders read from
# P:holders:<a>). A job whose owner runs its owner_max_running jobs already (P:orunning)
# is passed over, looked for among the first ``window`` members.
# Returns a list of job hashes.
CLAIM = _PRELUDE + r"""
local now, worker, lease_until, nonce = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local count, window, nholds = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local t = tonumber(now)
local holds = {}
for i = 10, 9 + nholds do holds[ARGV[i]] = true end
local last_key = P .. ':lastclaim:' .. worker
local claimed = {}
local last = redis.call('GET', last_key)
if last and string.sub(last, 1, #nonce + 1) == nonce .. ':' then  -- this claim, retried
  for id in string.gmatch(string.sub(last, #nonce + 2), '[^,]+') do
    table.insert(claimed, redis.call('HGETALL', job_key(id)))
  end
  return claimed
end
local fns = {}
for i = 10 + nholds, #ARGV, 4 do
  local fn = ARGV[i]
  local due = redis.call('ZRANGEBYSCORE', P .. ':delayed:' .. fn, '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(due) do  -- retries whose delay is over join their queue
    local j = redis.call('HMGET', job_key(id), 'qm', 'priority')
    redis.call('ZADD', P .. ':q:' .. fn, -tonumber(j[2]), j[1])
    redis.call('ZREM', P .. ':delayed:' .. fn, id)
  end
  table.insert(fns, {fn = fn, limit = ARGV[i + 1], want = tonumber(ARGV[i + 2]),
                    bound = tonumber(ARGV[i + 3])})
end

local others = {}  -- affinity -> held by another live worker (scores: report expiry)
local function held_elsewhere(a)
  if others[a] == nil then
    local key = P .. ':holders:' .. a
    local n = redis.call('ZCOUNT', key, '(' .. now, '+inf')
    local mine = redis.call('ZSCORE', key, worker)
    if mine and tonumber(mine) > t then n = n - 1 end
    others[a] = n > 0
  end
  return others[a]
end

local function at_quota(id)  -- its owner runs its owner_max_running jobs already
  local j = redis.call('HMGET', job_key(id), 'owner', 'owner_max_running')
  if not j[2] or j[2] == '' then return false end
  return tonumber(redis.call('HGET', P .. ':orunning', j[1]) or '0') >= tonumber(j[2])
end

-- The member of f's queue this claim would take, and its score, or nil (routing.choose)
local function candidate(f)
  local q = P .. ':q:' .. f.fn
  local top = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
  if not top[1] then return nil, nil end
  if not f.bound and not at_quota(member_id(top[1])) then
    return top[1], tonumber(top[2])
  end
  local level, fallback  -- the head level: the score of the first job not passed over
  local members = redis.call('ZRANGE', q, 0, window - 1, 'WITHSCORES')
  for i = 1, #members, 2 do
    local m, score = members[i], members[i + 1]
    if level and score ~= level then break end
    if not at_quota(member_id(m)) then
      level = score
      if not f.bound then return m, tonumber(score) end
      local j = redis.call('HMGET', job_key(member_id(m)), 'affinity', 'created_at',
                           'not_before', 'expires_at', 'started_at')
      local a = j[1]
      local since = math.max(tonumber(j[2]) or 0, tonumber(j[3]) or 0)
      if not a or a == '' or holds[a] or t - since >= f.bound
          or (j[4] and j[4] ~= '' and (not j[5] or j[5] == '') and tonumber(j[4]) <= t) then
        return m, tonumber(score)
      end
      if not fallback and not held_elsewhere(a) then fallback = m end
    end
  end
  if fallback then return fallback, tonumber(level) end
  return nil, nil
end
local ids = {}
while #ids < count do
  local best, best_member, best_score
  for _, f in ipairs(fns) do  -- highest priority, then oldest, over all the functions
    if f.want > 0 and (f.limit == '' or tonumber(
        redis.call('HGET', P .. ':running', f.fn) or '0') < tonumber(f.limit)) then
      local member, score = candidate(f)
      if member then
        if not best or score < best_score or (score == best_score and member < best_member) then
          best, best_member, best_score = f, member, score
        end
      end
    end
  end
  if not best then break end
  local id = member_id(best_member)
  local k = job_key(id)
  local j = redis.call('HMGET', k, 'expires_at', 'started_at', 'attempts', 'max_attempts',
                       'owner', 'priority')
  if j[1] ~= '' and j[2] == '' and tonumber(j[1]) <= tonumber(now) then
    end_job(id, 'expired', ARGV[6], 'null', '', now)  -- rules.queue_timed_out
  else
    leave_queue(id, best.fn, best_member, j[6], j[5])
    local tag = member_tag(best_member)
    if tag > 0 then  -- fair share's clock: V moves to the claimed job's start tag
      local h, vf = P .. ':fair:' .. best.fn, 'v:' .. tostring(tonumber(j[6]))
      if tag - 1 > tonumber(redis.call('HGET', h, vf) or '0') then
        redis.call('HSET', h, vf, tag - 1)
      end
    end
    redis.call('HINCRBY', P .. ':orunning', j[5], 1)
    local attempts = tonumber(j[3]) + 1
    redis.call('HINCRBY', k, 'lease_token', 1)
    redis.call('HSET', k, 'status', 'running', 'attempts', attempts, 'started_at', now,
               'worker_id', worker, 'lease_until', lease_until, 'lease_at', now, 'qm', '')
    redis.call('ZADD', P .. ':leases', lease_until, id)
    redis.call('ZREM', P .. ':expiry', id)
    redis.call('HINCRBY', P .. ':running', best.fn, 1)
    append_event(id, 'started', cjson.encode({attempt = attempts,  -- rules.started_event
      max_attempts = tonumber(j[4]), worker = worker}), now)
    announce(id)
    best.want = best.want - 1
    table.insert(ids, id)
    table.insert(claimed, redis.call('HGETALL', k))
  end
end
if #ids > 0 then redis.call('SET', last_key, nonce .. ':' .. table.concat(ids, ','), 'EX', 3600) end
return claimed
"""

# Appends of several running jobs at once. ARGV: P, ts, then for each job: id, worker,
# token, first id ('' = unknown), and its events, a line each, "<type> <JSON data>"
# (compact JSON never holds a raw line break). Returns each job's last event id, or -1
# when the lease no longer holds it.
APPEND = r"""
local P, ts = ARGV[1], ARGV[2]
local last = {}
for i = 3, #ARGV, 5 do
  local id = ARGV[i]
  local k = P .. ':job:' .. id
  local j = redis.call('HMGET', k, 'status', 'worker_id', 'lease_token', 'seq')
  if j[1] ~= 'running' or j[2] ~= ARGV[i + 1] or j[3] ~= ARGV[i + 2] then
    table.insert(last, -1)
  else
    local seq = tonumber(j[4])
    if ARGV[i + 3] == '' or tonumber(ARGV[i + 3]) > seq then  -- else: a retried batch
      local stream = P .. ':ev:' .. id
      for line in string.gmatch(ARGV[i + 4], '[^\n]+') do
        local space = string.find(line, ' ', 1, true)
        seq = seq + 1
        redis.call('XADD', stream, '0-' .. seq, 't', string.sub(line, 1, space - 1),
                   'd', string.sub(line, space + 1), 'ts', ts)
      end
      redis.call('HSET', k, 'seq', seq)
    end
    table.insert(last, seq)
  end
end
return last
"""

# A page of a job's log (read only). ARGV: P, id, after, limit, max bytes. Returns the
# entries after ``after`` as XRANGE does, at most ``limit``, ending with the entry whose
# data reaches ``max bytes``. It reads in steps: the first of one entry, each next at
# most four times the last and no more than the budget left holds at the size of the
# largest entry seen, so a log whose small first events (queued, started) are followed
# by 1 MB chunks is not read whole into the script's memory (a step sized by the
# budget alone did that: redis-server grew by 200 MB per replay of 100 MB).
READ = r"""
local key = ARGV[1] .. ':ev:' .. ARGV[2]
local start, limit, budget = '(0-' .. ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local out, used, largest, step = {}, 0, 0, 0
while #out < limit and used < budget do
  if largest == 0 then
    step = 1
  else
    step = math.max(1, math.min(limit - #out, 4 * step,
                                math.floor((budget - used) / largest)))
  end
  local entries = redis.call('XRANGE', key, start, '+', 'COUNT', step)
  if #entries == 0 then break end
  for _, entry in ipairs(entries) do
    if used >= budget then return out end
    local size = #entry[2][4]  -- fields t, type, d, data, ts, ts
    out[#out + 1] = entry
    used = used + size
    if size > largest then largest = size end
    start = '(' .. entry[1]
  end
end
return out
"""

# A job becomes terminal. ARGV: P, id, now, status, result, error, event data, then the
# conditions, each '' when not asked for: worker, token (the lease that must hold it),
# lapsed before (its lease must have lapsed: a reclaim), expected cancel_requested,
# bump ('1': move the token on, so the lapsed worker is fenced off).
# Returns {'ok', hash} | {'done', hash} (already terminal) | {'missing'} | {'lost'} |
# {'renewed'} (the lease was renewed meanwhile) | {'changed'} (cancel was requested).
FINISH = _PRELUDE + r"""
local id, now = ARGV[2], ARGV[3]
local worker, token, lapsed, cancel = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local k = job_key(id)
local j = redis.call('HMGET', k, 'status', 'worker_id', 'lease_token', 'lease_until',
                     'cancel_requested')
if not j[1] then return {'missing'} end
if not is_live(j[1]) then return {'done', redis.call('HGETALL', k)} end
if token ~= '' then
  if j[1] ~= 'running' or j[3] ~= token or (worker ~= '' and j[2] ~= worker) then
    return {'lost'}
  end
  if lapsed ~= '' and (j[4] == '' or tonumber(j[4]) > tonumber(lapsed)) then
    return {'renewed'}
  end
  if cancel ~= '' and j[5] ~= cancel then return {'changed'} end
end
if ARGV[12] == '1' then redis.call('HINCRBY', k, 'lease_token', 1) end
end_job(id, ARGV[4], ARGV[7], ARGV[5], ARGV[6], now)
return {'ok', redis.call('HGETALL', k)}
"""

# A running job goes back to the queue (retry, requeue, reclaim). ARGV: P, id, now,
# token, worker ('' = any: a reclaim), lapsed before (''), expected cancel_requested,
# not_before, attempts delta, bump ('1'/'0'), retrying event data, fair ('1'/'0').
# Returns as FINISH; {'done', hash} when the run had already left the queue's hands
# with this token (a retried call, or an administrative end).
REQUEUE = _PRELUDE + r"""
local id, now, token, worker, lapsed, cancel = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local k = job_key(id)
local j = redis.call('HMGET', k, 'status', 'worker_id', 'lease_token', 'lease_until',
                     'cancel_requested', 'function', 'priority', 'attempts', 'owner')
if not j[1] then return {'missing'} end
if j[3] ~= token then return {'lost'} end
if j[1] ~= 'running' then return {'done', redis.call('HGETALL', k)} end
if worker ~= '' and j[2] ~= worker then return {'lost'} end
if lapsed ~= '' and (j[4] == '' or tonumber(j[4]) > tonumber(lapsed)) then return {'renewed'} end
if j[5] ~= cancel then return {'changed'} end  -- rules: a requested cancel beats a retry
leave_running(id, j[6])
if ARGV[10] == '1' then redis.call('HINCRBY', k, 'lease_token', 1) end
redis.call('HSET', k, 'attempts', tonumber(j[8]) + tonumber(ARGV[9]), 'worker_id', '',
           'lease_until', '')
enqueue(id, j[6], j[7], j[9], ARGV[12], ARGV[8], now)
append_event(id, 'retrying', ARGV[11], now)
announce(id)
return {'ok', redis.call('HGETALL', k)}
"""

# ARGV: P, id, now, cancelled event data, ticket ('' = cancel whoever holds it). A
# queued job ends at once; a running one gets cancel_requested and its worker, wherever
# it runs, is told on P:cancel. With a ticket, that holder lets go, and the job is
# cancelled only when no holder is left (callers reaches 0).
# Returns {'ok', hash} | {'missing'} | {'unknown'} (no such ticket).
CANCEL = _PRELUDE + r"""
local id, now, ticket = ARGV[2], ARGV[3], ARGV[5] or ''
local k = job_key(id)
local j = redis.call('HMGET', k, 'status', 'cancel_requested')
if not j[1] then return {'missing'} end
if ticket ~= '' then
  local tickets = P .. ':tickets:' .. id
  local held = redis.call('HGET', tickets, ticket)
  if not held then return {'unknown'} end
  if held == '0' or not is_live(j[1]) then return {'ok', redis.call('HGETALL', k)} end
  redis.call('HSET', tickets, ticket, '0')
  if redis.call('HINCRBY', k, 'callers', -1) > 0 then  -- others hold it: it goes on
    return {'ok', redis.call('HGETALL', k)}
  end
end
if j[1] == 'queued' then
  end_job(id, 'cancelled', ARGV[4], 'null', '', now)
elseif j[1] == 'running' and j[2] ~= '1' then
  redis.call('HSET', k, 'cancel_requested', '1')
  redis.call('PUBLISH', P .. ':cancel', id)
end
return {'ok', redis.call('HGETALL', k)}
"""

# ARGV: P, worker, lease_until, lease_at (the renewal's now), then job id, token pairs.
# Returns {cancelled, lost}.
EXTEND = r"""
local P, worker, lease_until, lease_at = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local cancelled, lost = {}, {}
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  local k = P .. ':job:' .. id
  local j = redis.call('HMGET', k, 'status', 'worker_id', 'lease_token', 'cancel_requested')
  if j[1] == 'running' and j[2] == worker and j[3] == ARGV[i + 1] then
    redis.call('HSET', k, 'lease_until', lease_until, 'lease_at', lease_at)
    redis.call('ZADD', P .. ':leases', lease_until, id)
    if j[4] == '1' then table.insert(cancelled, id) end
  else
    table.insert(lost, id)
  end
end
return {cancelled, lost}
"""

# ARGV: P, now, expired event data. Ends every queued, never-started job past its queue
# timeout (rules.queue_timed_out); moves retries whose delay is over to their queue and
# announces them. Returns the number expired.
SWEEP = _PRELUDE + r"""
local now = ARGV[2]
local expired = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':expiry', '-inf', now, 'LIMIT', 0, 1000)) do
  local j = redis.call('HMGET', job_key(id), 'status', 'started_at')
  if j[1] == 'queued' and j[2] == '' then
    end_job(id, 'expired', ARGV[3], 'null', '', now)
    expired = expired + 1
  else
    redis.call('ZREM', P .. ':expiry', id)
  end
end
for _, fn in ipairs(redis.call('SMEMBERS', P .. ':fns')) do
  local due = redis.call('ZRANGEBYSCORE', P .. ':delayed:' .. fn, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    local j = redis.call('HMGET', job_key(id), 'qm', 'priority')
    redis.call('ZADD', P .. ':q:' .. fn, -tonumber(j[2]), j[1])
    redis.call('ZREM', P .. ':delayed:' .. fn, id)
  end
  if #due > 0 then redis.call('PUBLISH', P .. ':work', fn) end
end
return expired
"""

# ARGV: P, before, limit. Retention (genq.store.retention): deletes up to ``limit``
# finished jobs whose finished_at is before ``before``, oldest first, with their event
# stream, artifacts, listing entries, and the cache, idempotency and de-duplication
# entries that name them (only when they still name this job). Atomic, so housekeepers
# on many machines may run it at once; a second run finds the jobs gone.
# Returns the number of jobs deleted.
RETAIN = r"""
local P, before, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local finished = P .. ':finished'
local deleted = 0
local function drop_if_mine(hash, field, id)
  if redis.call('HGET', hash, field) == id then redis.call('HDEL', hash, field) end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', finished, '-inf', '(' .. before,
                               'LIMIT', 0, limit)) do
  local k = P .. ':job:' .. id
  local j = redis.call('HMGET', k, 'status', 'owner', 'cache_key', 'idempotency_key')
  if j[1] ~= 'queued' and j[1] ~= 'running' then  -- never a live job
    if j[1] then
      redis.call('ZREM', P .. ':idx:all', id)
      redis.call('ZREM', P .. ':idx:owner:' .. j[2], id)
      if j[3] ~= '' then
        drop_if_mine(P .. ':cache', j[3], id)
        drop_if_mine(P .. ':inflight', j[2] .. '\n' .. j[3], id)
      end
      if j[4] ~= '' then drop_if_mine(P .. ':idem', j[2] .. '\n' .. j[4], id) end
      for _, art in ipairs(redis.call('SMEMBERS', P .. ':arts:' .. id)) do
        redis.call('UNLINK', P .. ':art:' .. art)
      end
      redis.call('UNLINK', k, P .. ':ev:' .. id, P .. ':arts:' .. id, P .. ':tickets:' .. id)
      deleted = deleted + 1
    end
  end
  redis.call('ZREM', finished, id)
end
return deleted
"""


# A worker's report. ARGV: P, worker id, report (JSON, with its ``holds``), until (when
# the report expires), now, seconds a holders set lives on, then the affinity keys it
# holds. The holders sets are what CLAIM routes by: it leaves the sets of the models it
# no longer holds (read from its previous report) and joins, with the score ``until``,
# those it holds; members that expired are dropped on the way.
REGISTER = r"""
local P, id, report, till, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local keep = tonumber(ARGV[6])
local holds = {}
for i = 7, #ARGV do holds[ARGV[i]] = true end
local previous = redis.call('HGET', P .. ':workers', id)
if previous then
  for _, a in ipairs(cjson.decode(previous)['holds'] or {}) do
    if not holds[a] then redis.call('ZREM', P .. ':holders:' .. a, id) end
  end
end
redis.call('HSET', P .. ':workers', id, report)
redis.call('ZADD', P .. ':workers:until', till, id)
for i = 7, #ARGV do
  local key = P .. ':holders:' .. ARGV[i]
  redis.call('ZADD', key, till, id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  redis.call('EXPIRE', key, keep)
end
return 1
"""

# A worker leaves: its report, and its place among the holders of its models. ARGV: P, id.
UNREGISTER = r"""
local P, id = ARGV[1], ARGV[2]
local previous = redis.call('HGET', P .. ':workers', id)
if previous then
  for _, a in ipairs(cjson.decode(previous)['holds'] or {}) do
    redis.call('ZREM', P .. ':holders:' .. a, id)
  end
end
redis.call('HDEL', P .. ':workers', id)
redis.call('ZREM', P .. ':workers:until', id)
return 1
"""
