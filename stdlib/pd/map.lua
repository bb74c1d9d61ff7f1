--- pd.map: parallel map over local worker processes (docs/map.md).
--
-- The coordinator side of pd.map, pd.map_async, pd.jobs, pd.job, pd.init,
-- pd.shutdown, pd.nodes, pd.iserror and pd.rng.  The scheduling itself is C
-- (core/sched.c through pd.core.map): this file packs the function, keeps
-- the job handles, and draws progress.
local core = require "pd.core"
local cmap = require "pd.core.map"

local M = {}

local unpack = table.unpack or unpack  -- luacheck: ignore

-- ---------------------------------------------------------------------------
-- Error objects: message, traceback (the worker's), task, node, pid, kind.
local Error = {}
Error.__index = Error
Error.__name = "pd.Error"
Error.__pd_error = true     -- pd.iserror (stdlib/pd/init.lua) is true for it
function Error.__tostring(e)
  local tb = e.traceback
  local s = string.format("task %s failed on %s: %s", tostring(e.task), tostring(e.node),
                          tostring(e.message))
  if tb and tb ~= "" then s = s .. "\n(worker) " .. tb end
  return s
end
cmap.set_error_mt(Error)
M._Error = Error    -- pd.tasks (stdlib/pd/tasks.lua) makes its errors with it

--- pd.iserror(v) -> true when v is a failed task's error object.
function M.iserror(v) return getmetatable(v) == Error end

-- ---------------------------------------------------------------------------
-- The mapped function travels once per worker as one codec message (lua/
-- codec.h): bytecode with its upvalues, library values by name, resolved
-- again on the worker; `shared` rides along.  The workers are our own
-- children running this VM: trusted for bytecode.

-- A function whose upvalues are all plain values (nil, booleans, numbers,
-- strings), the globals table or C functions packs the same way every time
-- until one of them changes: its blob is cached (one string.dump per
-- function, not per map).  Tables are never assumed unchanged.
local blob_cache = setmetatable({}, { __mode = "k" })

local function upvalues_key(f)
  local vals, i = {}, 1
  while true do
    local n, v = debug.getupvalue(f, i)
    if not n then break end
    local t = type(v)
    if t == "table" then
      if v ~= _G then return nil end
    elseif t == "function" then
      if not pcall(debug.getinfo, v, "S") or debug.getinfo(v, "S").what ~= "C" then return nil end
    elseif t ~= "nil" and t ~= "boolean" and t ~= "number" and t ~= "string" then
      return nil
    end
    vals[i] = v
    i = i + 1
  end
  vals.n = i - 1
  return vals
end

local function same(a, b)
  if a.n ~= b.n then return false end
  for i = 1, a.n do
    local x, y = a[i], b[i]
    if x ~= y or (math.type and math.type(x) ~= math.type(y)) then return false end
  end
  return true
end

-- cluster: the script's own Lua modules (files under its directory) travel
-- with the job as source, so that workers on other machines can require
-- them; a worker started by a node loads them in text mode only.
local function local_modules()
  if not arg or not arg[0] then return nil end
  local ok, codec = pcall(require, "pd.codec")
  if not ok then return nil end
  local ok2, b = pcall(codec.bundle)
  if not ok2 or not b then return nil end
  local mods, any = {}, false
  for name, m in pairs(b.modules) do
    mods[name] = { src = b.sources[m.sha], path = m.path }
    any = true
  end
  return any and mods or nil
end

--- The blob a worker turns back into (f, shared).
-- Two messages: the module search paths first (the function may name
-- modules that only those paths find), then {f, shared}.
-- The globals a mapped function sees are the worker's own: an _ENV
-- upvalue that is not _G (a sandbox, a test framework's environment) is
-- swapped for _G while the function is encoded, in f and the functions it
-- reaches through upvalues, and put back afterwards; otherwise the whole
-- environment would travel by value.
local function swap_envs(v, seen, undo, tables)
  if seen[v] then return end
  seen[v] = true
  if type(v) == "table" then
    for k, x in next, v do
      if type(k) == "table" or type(k) == "function" then swap_envs(k, seen, undo, tables) end
      if type(x) == "table" or type(x) == "function" then swap_envs(x, seen, undo, tables) end
    end
    return
  end
  if debug.getinfo(v, "S").what == "C" then return end
  local i = 1
  while true do
    local n, x = debug.getupvalue(v, i)
    if not n then break end
    if n == "_ENV" and x ~= _G and type(x) == "table" then
      debug.setupvalue(v, i, _G)
      undo[#undo + 1] = { v, i, x }
    elseif type(x) == "function" or (tables and type(x) == "table" and x ~= _G) then
      swap_envs(x, seen, undo, tables)
    end
    i = i + 1
  end
end

--- _encode_in_G(v, from, tables) -> the codec message of v, encoded while
-- every _ENV upvalue reachable from `from` (a function, or a table when
-- `tables`) is _G; put back afterwards, also when encoding raises.  Through
-- functions' upvalues only, or (tables = true, pd.tasks's task table) through
-- tables and their fields too.
function M._encode_in_G(v, from, tables)
  local undo = {}
  swap_envs(from, { [_G] = true }, undo, tables)
  local ok, s = pcall(cmap.encode, v)
  for k = #undo, 1, -1 do debug.setupvalue(undo[k][1], undo[k][2], undo[k][3]) end
  if not ok then error(s, 0) end
  return s
end

local function encode_job(f, shared)
  return M._encode_in_G({ f = f, shared = shared }, f, false)
end

local S   -- the session (below); _pack looks at its cluster

-- Pinned functions (M._pin) pack once for as long as they live, whatever
-- their upvalues and `shared` hold: their owner promises that none of it
-- changes meanwhile.  pd.optim pins a run's evaluation task, which closes
-- over the fitness and its extra arguments (a table), so that a run of
-- many generations packs it once, not once per generation.
local pinned = setmetatable({}, { __mode = "k" })
local PINNED = { n = -1 }          -- the cache key of a pinned function

--- pd.map._pin(f) -> f, packed once from now on (see above).
function M._pin(f)
  pinned[f] = true
  return f
end

function M._pack(f, shared)
  local key
  if pinned[f] then key = PINNED
  else key = shared == nil and upvalues_key(f) end
  local hit = key and blob_cache[f]
  -- cluster: the script's modules travel only when nodes may run the job
  -- (reading and hashing them costs a local-only job's cold start)
  local remote = S.cluster ~= nil
  -- (same() tells PINNED from any upvalue list by its n; shared is nil
  -- unless pinned)
  if hit and same(hit.key, key) and rawequal(hit.shared, shared)
     and hit.path == package.path and hit.cpath == package.cpath and hit.remote == remote then
    return hit.blob
  end
  local paths = cmap.encode { path = package.path, cpath = package.cpath,
                              mods = remote and local_modules() or nil }
  local blob = #paths .. ":" .. paths .. encode_job(f, shared)
  if key then
    blob_cache[f] = { key = key, blob = blob, path = package.path, cpath = package.cpath,
                      remote = remote, shared = shared }
  end
  return blob
end

--- Worker side of _pack: blob -> f, shared.  The code is pd.jobload (a
-- worker loads it, not this file; the C loop caches per blob).
function M._unpack(blob) return require("pd.jobload")(blob) end

-- ---------------------------------------------------------------------------
-- The session: pools of local workers, created on first use.

S = {
  pools = {},        -- memory limit (MiB) or "default" -> pool; "gpus:N:MiB" -> GPU pool
  jobs = setmetatable({}, { __mode = "v" }),  -- id -> job
  njobs = 0,
}

local machine_cpus, machine_avail, options, cached
local function settings()
  if cached then return cached end
  if not machine_cpus then
    machine_cpus, machine_avail = cmap.machine()
    options = core.options()
  end
  local o, cpus, avail = options, machine_cpus, machine_avail
  cached = {
    cpus = S.cpus or o.cpus or cpus,
    seed = S.seed or o.seed,
    progress = S.progress,
    json = o.json,
    avail = avail,
    tty = cmap.isatty(2),     -- once, not a system call per map
  }
  return cached
end

M._settings = settings   -- pd.tasks reads the session's cpus and seed

--- pd.init{cpus=, seed=, memory=, progress=, nodes=}: optional; without it
-- the first map starts local workers on every CPU (or --cpus).
-- cluster: the nodes of this session (pd.cluster), started by pd.init{nodes=}
-- or, on first use, from `pdlua run --nodes/--discover`.
local function start_cluster(opts)
  local o = core.options()
  local nodes = opts.nodes or o.nodes
  local discover = opts.discover
  if discover == nil then discover = o.discover end
  if not discover and (nodes == nil or nodes == "" or (type(nodes) == "table" and next(nodes) == nil)) then
    return nil                                 -- local only: pd.cluster not even loaded
  end
  local cl_nodes = require("pd.cluster").url_list(nodes)
  if #cl_nodes == 0 and not discover then return nil end
  return require("pd.cluster").start {
    nodes = cl_nodes, discover = discover, secret = opts.secret,
    secret_file = opts.secret_file or o.secret_file, tls_ca = opts.tls_ca or o.tls_ca,
  }
end

local function ensure_cluster()
  if S.cluster_started then return S.cluster end
  S.cluster_started = true
  S.cluster = start_cluster({})
  return S.cluster
end

function M.init(opts)
  opts = opts or {}
  local remote = (opts.nodes and #require("pd.cluster").url_list(opts.nodes) > 0) or opts.discover
                 or core.options().nodes or core.options().discover
  if opts.cpus ~= nil then
    assert(math.type == nil or math.type(opts.cpus) ~= "float" or opts.cpus % 1 == 0,
           "pd.init: cpus must be a whole number")
    if opts.cpus < (remote and 0 or 1) then
      error("pd.init: cpus must be at least 1 (0 only with nodes)", 2)
    end
    S.cpus = opts.cpus
  end
  if opts.nodes or opts.discover or opts.secret or opts.secret_file then
    if S.cluster then
      for _, p in pairs(S.pools) do p:close() end
      S.pools = {}
      S.cluster:close()
    end
    S.cluster_started = true
    S.cluster = start_cluster(opts)
  end
  if opts.gpus ~= nil then
    if type(opts.gpus) ~= "number" or opts.gpus < 0 or opts.gpus % 1 ~= 0 then
      error("pd.init: gpus must be a whole number >= 0", 2)
    end
    S.gpus = opts.gpus
  end
  if opts.seed ~= nil then S.seed = opts.seed end
  if opts.memory ~= nil then S.memory = opts.memory end
  if opts.progress ~= nil then S.progress = opts.progress end
  cached = nil
  for k, p in pairs(S.pools) do
    if not (type(k) == "string" and k:sub(1, 5) == "gpus:") then p:resize(S.cpus or settings().cpus) end
  end
  return true
end

local function worker_argv()
  local exe = core.exe()
  if not exe then error("pd.map: cannot find the pdlua executable to start workers", 3) end
  return { exe, "-e", "require('pd.worker')" }
end

-- The pool for workers with this memory cap (MiB, or nil for the default).
local function get_pool(memory_mib, cpus)
  if not memory_mib and not cpus then              -- the common case, quickly
    local p = S.pools.default
    if p and not p:closed() then return p end
  end
  local st = settings()
  local n = math.max(cpus or 0, st.cpus)
  local bytes
  if memory_mib then bytes = math.floor(memory_mib * 1048576)
  elseif S.memory then bytes = math.floor(S.memory * 1048576)
  else
    -- a fair share of what the machine has free: a runaway task fails
    -- with an out-of-memory error long before the kernel's OOM killer
    bytes = st.avail > 0 and math.floor(st.avail * 0.9 / math.max(n, 1)) or 0
  end
  local key = memory_mib or "default"
  local p = S.pools[key]
  if p and p:closed() then p = nil end
  if not p then
    local cl = ensure_cluster()                -- cluster: may raise (refused)
    if n < 1 and not cl then n = 1 end
    if bytes ~= bytes or bytes == math.huge then bytes = 0 end
    p = cmap.pool { workers = n, memory = bytes, argv = worker_argv() }
    S.pools[key] = p
    if cl and key == "default" then cl:bind(p) end   -- cluster: remote slots join
  else
    p:resize(n)
  end
  return p
end

-- The pool of GPU workers for pd.map{gpus = n}: n workers, worker k bound
-- to device k-1 (PDLUA_GPU_DEVICE; a replacement takes the place of the
-- worker it replaces).  Local devices only: nodes advertise their GPUs
-- (pd.nodes()) but remote GPU slots are not scheduled yet.  No memory cap
-- unless asked for (the CUDA driver needs address space beyond any sane
-- RLIMIT_AS, so a GPU worker never gets one; `memory` caps its Lua heap).
local function get_gpu_pool(n, memory_mib)
  local why = require("pd.gpu")._unusable(n)
  if why then error("pd.map: gpus = " .. n .. ": " .. why, 4) end
  local key = "gpus:" .. n .. ":" .. tostring(memory_mib or "")
  local p = S.pools[key]
  if p and not p:closed() then return p end
  p = cmap.pool { workers = n, memory = memory_mib and math.floor(memory_mib * 1048576) or 0,
                  argv = worker_argv(), gpus = n }
  S.pools[key] = p
  return p
end

--- pd.shutdown(): stop every worker; jobs in flight are cancelled.
function M.shutdown()
  for k, p in pairs(S.pools) do
    p:close()
    S.pools[k] = nil
  end

  if S.cluster then S.cluster:close() end     -- cluster: after its pools
  S.cluster, S.cluster_started = nil, false
  return true
end

--- The session as pd.init left it, without starting anything: cpus (nil
-- unless pd.init set them) and cluster (true when nodes have joined).
-- pd.optim reads it to decide whether to spread evaluations.
function M._session()
  return { cpus = S.cpus, cluster = S.cluster ~= nil }
end

--- pd.nodes() -> the local machine, then every node of the session (as last heard).
function M.nodes()
  local st = settings()
  local busy, pids = 0, {}
  for _, p in pairs(S.pools) do
    if not p:closed() then
      for _, pid in ipairs(p:pids()) do pids[#pids + 1] = pid end
      busy = busy + p:busy()
    end
  end
  -- the GPUs here: --gpus / pd.init{gpus=} when given, else the devices seen
  local gpus = S.gpus or options.gpus
  if gpus == nil then
    local devs = require("pd.gpu").devices()
    gpus = devs and #devs or 0
  end
  local t = { { url = "local", name = "local", cpus = st.cpus, gpus = gpus, busy = busy, alive = true,
                workers = pids } }
  local cl = ensure_cluster()                  -- cluster: every node, as last heard
  if cl then
    for _, n in ipairs(cl:nodes()) do t[#t + 1] = n end
  end
  return t
end

-- ---------------------------------------------------------------------------
-- Progress: a bar on a terminal, JSON events for scripts.

local function json_str(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function emit(ev)
  local parts = {}
  for _, k in ipairs(ev) do
    local v = ev[k]
    local s = type(v) == "string" and json_str(v) or
              (type(v) == "number" and (v ~= v and "null" or string.format("%.17g", v)) or tostring(v))
    if type(v) == "number" and math.type and math.type(v) == "integer" then s = tostring(v) end
    parts[#parts + 1] = json_str(k) .. ":" .. s
  end
  io.stderr:write("{" .. table.concat(parts, ",") .. "}\n")
  io.stderr:flush()
end

local function fmt_time(s)
  if s ~= s or s == math.huge then return "?" end
  if s < 60 then return string.format("%.0fs", s) end
  if s < 3600 then return string.format("%dm%02ds", math.floor(s / 60), math.floor(s % 60)) end
  return string.format("%dh%02dm", math.floor(s / 3600), math.floor(s % 3600 / 60))
end

local function draw_bar(job, final)
  local done, total, failed = job:progress()
  local el = core.now() - job._t0
  local rate = el > 0 and done / el or 0
  local eta = rate > 0 and (total - done) / rate or math.huge
  local w = 30
  local fill = total > 0 and math.floor(w * done / total) or w
  local line = string.format("\r[%s%s] %d/%d %s%.0f/s ETA %s ", string.rep("#", fill),
                             string.rep(".", w - fill), done, total,
                             failed > 0 and (failed .. " failed ") or "", rate,
                             final and fmt_time(el) or fmt_time(eta))
  io.stderr:write(line .. (final and "\n" or ""))
  io.stderr:flush()
end

local function report(job, final)
  local now = core.now()
  if not final and now - (job._last_report or 0) < 0.25 then return end
  job._last_report = now
  if job._json then
    local done, total, failed = job:progress()
    local el = now - job._t0
    if final then
      emit { "event", "job", "status", "done", "total", "failed", "seconds",
             event = "job_finished", job = job.id, status = job:status(), done = done,
             total = total, failed = failed, seconds = el }
    else
      emit { "event", "job", "done", "total", "failed", "rate",
             event = "progress", job = job.id, done = done, total = total,
             failed = failed, rate = el > 0 and done / el or 0 }
    end
  end
  if job._bar and (final and job._drawn or now - job._t0 > 0.5) then
    job._drawn = true
    draw_bar(job, final)
  end
end

-- ---------------------------------------------------------------------------
-- Jobs

local Job = {}
Job.__index = Job
Job.__name = "pd.Job"

local function final_status(s) return s == "done" or s == "failed" or s == "cancelled" end

-- status and progress give the scheduler a turn (without waiting), so a
-- script that polls them keeps its workers busy.
function Job:status()
  if self._released then return self._final_status end
  self._pool:pump(0)
  return self._pool:status(self.id)
end

--- job:progress() -> done, total, failed
function Job:progress()
  if self._released then return self._done, self.n, self._failed end
  self._pool:pump(0)
  return self._pool:progress(self.id)
end

local function finished(job)
  if job._reported then return end
  job._reported = true
  if job._json or job._bar then report(job, true) end
end

--- job:wait([seconds]) -> true when the job is over (done, failed or
-- cancelled), or nil, "timeout".
function Job:wait(seconds)
  local deadline = seconds and core.now() + seconds
  local pool = self._pool
  while not final_status(self:status()) do
    local left = deadline and deadline - core.now()
    if left and left <= 0 then return nil, "timeout" end
    local step = (self._json or self._bar) and 0.25 or -1
    if left and (step < 0 or left < step) then step = left end
    pool:pump(step)
    if self._json or self._bar then report(self) end
  end
  finished(self)
  return true
end

local function raise_failure(job)
  local i, e = job._pool:first_failure(job.id)
  if e then error(e, 0) end
end

--- job:results() -> { r1, ..., n = total }, waiting for the job first.
-- With errors = "raise" (the default) a failed job raises its first error
-- object; with "collect" failed slots hold error objects.
function Job:results()
  if self._released then error("job " .. self.id .. " was released", 2) end
  self:wait()
  local st = self:status()
  if st == "cancelled" then error("job " .. self.id .. " was cancelled", 2) end
  if st == "failed" and not self._collect then raise_failure(self) end
  return self._pool:results(self.id)
end

--- job:cancel(): queued tasks never start; running ones are stopped now.
function Job:cancel()
  if self._released then return end
  self._pool:cancel(self.id)
  finished(self)
end

--- for i, v in job:each() do ... end: results as they complete (v may be
-- an error object with errors = "collect"; a failure raises otherwise).
function Job:each()
  local k = 0
  return function()
    k = k + 1
    while true do
      -- the status first: status() pumps, and a task it sees finish must
      -- still be yielded below (fix of a race seen in spec/map under load)
      local st = self:status()
      local i, v = self._pool:completed(self.id, k)
      if i then
        if M.iserror(v) and not self._collect then error(v, 0) end
        return i, v
      end
      if final_status(st) then finished(self); return nil end
      self._pool:pump((self._json or self._bar) and 0.25 or -1)
      if self._json or self._bar then report(self) end
    end
  end
end

--- job:release(): forget the job's results now (done by the GC otherwise).
function Job:release()
  if self._released then return end
  local pool = self._pool
  if not pool:closed() then
    self._final_status = pool:status(self.id)
    self._done, _, self._failed = pool:progress(self.id)
    pool:release(self.id)
  else
    self._final_status = "cancelled"
    self._done, self._failed = 0, 0
  end
  self._released = true
end

local function release_gc(job)
  if not job._released and job._pool and not job._pool:closed() then
    job._pool:release(job.id)
    job._released = true
  end
end
Job.__gc = release_gc

local function attach_gc(job)
  if newproxy then                 -- LuaJIT: no __gc on tables
    local proxy = newproxy(true)
    getmetatable(proxy).__gc = function() release_gc(job) end
    job._proxy = proxy
  end
end

local known = { _gang = 1,     -- pd.tasks (stdlib/pd/tasks.lua) across nodes
                cpus = 1, gpus = 1, nodes = 1, chunk = 1, timeout = 1, memory = 1, retries = 1,
                seed = 1, progress = 1, errors = 1, shared = 1, unpack = 1 }

local INTEGER_OPTS = { "chunk", "cpus", "gpus", "retries" }

-- Misuse of pd.map's options raises, pointing at the caller of pd.map.
local function check_opts(opts)
  for k in pairs(opts) do
    if not known[k] then error("pd.map: unknown option '" .. tostring(k) .. "'", 4) end
  end
  if opts.errors ~= nil and opts.errors ~= "raise" and opts.errors ~= "collect" then
    error("pd.map: errors must be \"raise\" or \"collect\"", 4)
  end
  for _, k in ipairs(INTEGER_OPTS) do
    local v = opts[k]
    if v ~= nil and (type(v) ~= "number" or v < 0 or v % 1 ~= 0) then
      error("pd.map: " .. k .. " must be a whole number >= 0", 4)
    end
  end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout <= 0) then
    error("pd.map: timeout must be a positive number of seconds", 4)
  end
  if opts.memory ~= nil and (type(opts.memory) ~= "number" or opts.memory <= 0) then
    error("pd.map: memory must be a positive number of MiB", 4)
  end
end

-- Check the arguments, pack f, submit the job.  Errors point at the caller
-- of pd.map / pd.map_async (level 3).  Returns pool, id, n, seed, collect,
-- json, bar.
local function start(f, list, opts)
  opts = opts or {}
  if type(f) ~= "function" then error("pd.map: bad argument #1 (function expected, got "
                                      .. type(f) .. ")", 3) end
  if type(list) == "userdata" and require("pd.core.array").isarray(list) then
    -- a pd.array: one element (1-D) or one row (2-D and up) per task
    local rows, a = {}, list
    local dims = { a:shape() }
    for i = 1, dims[1] do rows[i] = #dims == 1 and a[i] or a:row(i) end
    list = rows
  end
  if type(list) ~= "table" then error("pd.map: bad argument #2 (table or pd.array expected, got "
                                      .. type(list) .. ")", 3) end
  if type(opts) ~= "table" then error("pd.map: bad argument #3 (table expected)", 3) end
  if next(opts) ~= nil then check_opts(opts) end
  if opts.nodes ~= nil then                  -- cluster: nodes join the session
    local cl = ensure_cluster()
    if not cl then
      M.init { nodes = opts.nodes }
    else
      for _, u in ipairs(require("pd.cluster").url_list(opts.nodes)) do cl:add(u) end
    end
  end
  local st = settings()
  S.njobs = S.njobs + 1
  local seed = opts.seed
  if seed == nil then
    local base = tonumber(st.seed) or 0
    if st.seed == nil then base = math.floor(core.now() * 1e6) % 2147483647 end
    seed = base * 1000003 + S.njobs
  end
  seed = math.floor(tonumber(seed) or error("pd.map: seed must be a number", 3))
  local n = list.n or #list
  local pool
  if opts.gpus and opts.gpus > 0 then pool = get_gpu_pool(opts.gpus, opts.memory)
  else pool = get_pool(opts.memory, opts.cpus) end
  local blob = M._pack(f, opts.shared)
  local id = pool:submit(blob, list, {
    n = n, chunk = opts.chunk, cpus = opts.cpus, retries = opts.retries,
    timeout = opts.timeout, seed = seed, collect = opts.errors == "collect",
    unpack = opts.unpack, gang = opts._gang,   -- _gang: pd.tasks across nodes
  })
  local progress = opts.progress
  if progress == nil then progress = st.progress end
  if progress == nil then progress = options.progress end
  local json = st.json and progress ~= false
  local bar = progress ~= false and (progress == true or st.tty) and not st.json
  return pool, id, n, seed, opts.errors == "collect", json, bar
end

local function new_job(pool, id, n, seed, collect, json, bar)
  local job = setmetatable({
    id = id, n = n, seed = seed, _pool = pool, _t0 = core.now(),
    _collect = collect, _json = json, _bar = bar,
  }, Job)
  attach_gc(job)
  S.jobs[id] = job
  if json then
    emit { "event", "job", "total", "seed", event = "job_started", job = id, total = n, seed = seed }
  end
  return job
end

--- pd.map_async(f, list [, opts]) -> job
function M.map_async(f, list, opts)
  local job = new_job(start(f, list, opts))
  job._pool:pump(0)                 -- hand out the first batches now
  cmap.autopump(S.pools)            -- and more while the script runs on
  return job
end

-- Pump until job id is over, decoding results into acc as they come (the
-- workers run the next batches meanwhile); returns its status.
local function run_out(pool, id, acc)
  local st = pool:status(id)
  local k = 0
  while st == "queued" or st == "running" do
    pool:pump(-1)
    k = pool:collect(id, acc, k)
    st = pool:status(id)
  end
  pool:collect(id, acc, k)
  return st
end

--- pd.map(f, list [, opts]) -> results in list order, results.n == #list.
function M.map(f, list, opts)
  local pool, id, n, seed, collect, json, bar = start(f, list, opts)
  if json or bar then                        -- with a progress report: a job
    local job = new_job(pool, id, n, seed, collect, json, bar)
    job:wait()
    if job:status() == "failed" and not collect then
      local _, e = pool:first_failure(id)
      job:release()
      error(e, 0)
    end
    local r = pool:results(id)
    job:release()
    return r
  end
  -- the plain path, for the many small maps of a loop: no job object
  local acc = cmap.table(n)
  local ok, st = pcall(run_out, pool, id, acc)
  if not ok then pool:release(id); error(st, 0) end   -- interrupted: the job goes
  if st == "failed" and not collect then
    local _, e = pool:first_failure(id)
    pool:release(id)
    error(e, 0)
  end
  local _, _, failed = pool:progress(id)
  if failed > 0 then acc = pool:results(id) end      -- error objects in their slots
  acc.n = n
  pool:release(id)
  return acc
end

--- pd.jobs() -> the jobs still held (not released), by id.
function M.jobs()
  local t = {}
  for id, j in pairs(S.jobs) do
    if not j._released then t[#t + 1] = j end
  end
  table.sort(t, function(a, b) return a.id < b.id end)
  return t
end

--- pd.job(id) -> job or nil
function M.job(id)
  local j = S.jobs[id]
  if j and not j._released then return j end
  return nil
end

--- pd.rng() -> inside a task, the generator of stream (job seed, task
-- index) of pd.random (Philox, from arrays): the same object all through
-- the task, whatever worker runs it.  Outside a task, pd.random's own
-- pd.rng (stream 0 of the --seed).
local rng_serial, rng_cur
function M.rng()
  local i, seed, serial = cmap.task()
  if i then
    if serial ~= rng_serial then
      rng_cur = require("pd.core.array").random.stream(seed, i)
      rng_serial = serial
    end
    return rng_cur
  end
  return require("pd.random").rng()
end

--- Worker pids of every pool (for tests and pd.nodes).
function M._pids()
  local t = {}
  for _, p in pairs(S.pools) do
    if not p:closed() then
      for _, pid in ipairs(p:pids()) do t[#t + 1] = pid end
    end
  end
  return t
end

function M._pools() return S.pools end

return M
