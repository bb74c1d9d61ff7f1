--- pd.map: parallel map over local worker processes (docs/map.md).
--
-- The coordinator side of pd.map, pd.map_async, pd.jobs, pd.job, pd.iserror
-- (as pd.map.iserror) and pd.rng: this file checks the arguments, keeps the
-- job handles, and draws progress.  The scheduling itself is C (core/
-- sched.c through pd.core.map); the workers, nodes and settings are the
-- session's (pd.session); the function travels as pd.pack makes it; a
-- failed task is a pd.error object.  pd.init, pd.shutdown and pd.nodes are
-- pd.session's, also reachable here as pd.map.init, .shutdown and .nodes.
local core = require "pd.core"
local cmap = require "pd.core.map"
local perr = require "pd.error"
local pack = require "pd.pack"
local session = require "pd.session"

local M = {}

local unpack = table.unpack or unpack  -- luacheck: ignore

-- The session's and the packer's calls on pd.map's path, as upvalues.
local settings, get_pool, get_gpu_pool = session.settings, session.pool, session.gpu_pool
local remote, pack_blob = session.remote, pack.pack
local options                      -- `pdlua run`'s flags (session.options(), once)

cmap.set_error_mt(perr.Error)      -- a failed task's error object is a pd.Error

--- pd.map.iserror(v) -> true when v is a failed task's error object.
M.iserror = perr.is
local iserror = perr.is

M.init, M.shutdown, M.nodes = session.init, session.shutdown, session.nodes

local jobs = setmetatable({}, { __mode = "v" })  -- id -> job (pd.jobs, pd.job)
local njobs = 0                                  -- jobs started: a job's default seed

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
        if iserror(v) and not self._collect then error(v, 0) end
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
  if opts.nodes ~= nil then session.join(opts.nodes) end   -- cluster: nodes join the session
  local st = settings()
  njobs = njobs + 1
  local seed = opts.seed
  if seed == nil then
    local base = tonumber(st.seed) or 0
    if st.seed == nil then base = math.floor(core.now() * 1e6) % 2147483647 end
    seed = base * 1000003 + njobs
  end
  seed = math.floor(tonumber(seed) or error("pd.map: seed must be a number", 3))
  local n = list.n or #list
  local pool
  if opts.gpus and opts.gpus > 0 then pool = get_gpu_pool(opts.gpus, opts.memory)
  else pool = get_pool(opts.memory, opts.cpus) end
  local blob = pack_blob(f, opts.shared, remote())
  local id = pool:submit(blob, list, {
    n = n, chunk = opts.chunk, cpus = opts.cpus, retries = opts.retries,
    timeout = opts.timeout, seed = seed, collect = opts.errors == "collect",
    unpack = opts.unpack, gang = opts._gang,   -- _gang: pd.tasks across nodes
  })
  local progress = opts.progress
  if progress == nil then progress = st.progress end
  if progress == nil then
    options = options or session.options()
    progress = options.progress
  end
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
  jobs[id] = job
  if json then
    emit { "event", "job", "total", "seed", event = "job_started", job = id, total = n, seed = seed }
  end
  return job
end

--- pd.map_async(f, list [, opts]) -> job
function M.map_async(f, list, opts)
  local job = new_job(start(f, list, opts))
  job._pool:pump(0)                 -- hand out the first batches now
  cmap.autopump(session.pools())           -- and more while the script runs on
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
  for _, j in pairs(jobs) do
    if not j._released then t[#t + 1] = j end
  end
  table.sort(t, function(a, b) return a.id < b.id end)
  return t
end

--- pd.job(id) -> job or nil
function M.job(id)
  local j = jobs[id]
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
      rng_cur = require("pd.core.random").stream(seed, i)
      rng_serial = serial
    end
    return rng_cur
  end
  return require("pd.random").rng()
end

return M
