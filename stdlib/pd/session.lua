--- pd.session: what pd.map and pd.tasks run on (docs/map.md, "Sessions").
--
-- One session per Lua state, everything in it made on first use (requiring
-- this module starts nothing):
--   the pools   local workers, one pool per memory cap ("default" without
--               one) and one per GPU count and cap ("gpus:N:MiB");
--   the nodes   the cluster (pd.cluster), started by pd.init{nodes=} or, on
--               first use, from `pdlua run --nodes/--discover`; only the
--               default pool lends to it and borrows from it (bind, below);
--   settings    cpus, seed, progress, json, avail, tty: read once and kept
--               until pd.init changes them (pd.map reads them per call).
-- Public: settings(), options(), state(), remote(), cluster(), join(nodes),
-- pool(memory_mib, cpus), gpu_pool(n, memory_mib), pools(), pids(),
-- init(opts), shutdown(), nodes() (the last three are pd.init, pd.shutdown
-- and pd.nodes).  Jobs are not the session's: pd.map keeps its handles.
local core = require "pd.core"
local cmap = require "pd.core.map"

local M = {}

local S = {
  pools = {},        -- memory limit (MiB) or "default" -> pool; "gpus:N:MiB" -> GPU pool
  -- cpus, seed, memory, progress, gpus: as pd.init set them (nil: not set)
  -- cluster, cluster_started: the nodes (nil: local only), once looked for
}

-- ---------------------------------------------------------------------------
-- Settings

local machine_cpus, machine_avail, options, cached


--- session.settings() -> { cpus, seed, progress, json, avail, tty }: the
-- session's (pd.init's, else `pdlua run`'s flags, else the machine's).
-- The same table until pd.init changes something: read it, never write.
function M.settings()
  if cached then return cached end
  if not machine_cpus then machine_cpus, machine_avail = cmap.machine() end
  local o, cpus, avail = M.options(), machine_cpus, machine_avail
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
local settings = M.settings

--- session.options() -> the flags `pdlua run` was started with, read once
-- (the same table every call: read it, never write).
function M.options()
  if not options then options = core.options() end
  return options
end

--- session.state() -> { cpus, cluster }: the session as pd.init left it,
-- without starting anything: cpus (nil unless pd.init set them) and
-- cluster (true when nodes have joined).  pd.optim reads it to decide
-- whether to spread evaluations.
function M.state()
  return { cpus = S.cpus, cluster = S.cluster ~= nil }
end

--- session.remote() -> true when nodes have joined (state().cluster,
-- without a table: pd.map asks it per call).
function M.remote() return S.cluster ~= nil end

-- ---------------------------------------------------------------------------
-- The nodes (cluster)

-- The nodes of opts (pd.init's) or of `pdlua run --nodes/--discover`, or
-- nil when there are none (pd.cluster is then not even loaded).
local function start_cluster(opts)
  local o = M.options()
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

--- session.cluster() -> the session's cluster, or nil when local only; the
-- first call starts it from `pdlua run --nodes/--discover` (may raise:
-- refused).
function M.cluster()
  if S.cluster_started then return S.cluster end
  S.cluster_started = true
  S.cluster = start_cluster({})
  return S.cluster
end
local ensure_cluster = M.cluster

--- session.join(nodes): the nodes (URLs, a list or a string) join the
-- session, starting its cluster if it has none (pd.map{nodes=}).
function M.join(nodes)
  local cl = ensure_cluster()
  if not cl then
    M.init { nodes = nodes }
  else
    for _, u in ipairs(require("pd.cluster").url_list(nodes)) do cl:add(u) end
  end
end

-- ---------------------------------------------------------------------------
-- Pools

-- (Raised at pd.map's start: worker_argv, new_pool, pool or gpu_pool, start.)
local function worker_argv()
  local exe = core.exe()
  if not exe then error("pd.map: cannot find the pdlua executable to start workers", 4) end
  return { exe, "-e", "require('pd.worker')" }
end

-- Pools and the cluster meet here and nowhere else: the remote slots of
-- the cluster's nodes join the default pool (pd.map without memory or
-- gpus), and only it.  A pool with its own memory cap stays local (the cap
-- is a local RLIMIT_AS); GPU pools stay local (nodes advertise their GPUs,
-- pd.nodes(), but remote GPU slots are not scheduled yet).
local function bind(key, p, cl)
  if cl and key == "default" then cl:bind(p) end   -- cluster: remote slots join
end

-- A new pool under key, with its workers started and bound as above.
local function new_pool(key, spec, cl)
  spec.argv = worker_argv()
  local p = cmap.pool(spec)
  S.pools[key] = p
  bind(key, p, cl)
  return p
end

--- session.pool(memory_mib, cpus) -> the pool for workers with this memory
-- cap (MiB, or nil for the default), with at least `cpus` workers (or the
-- session's cpus), made on first use.
function M.pool(memory_mib, cpus)
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
    p = new_pool(key, { workers = n, memory = bytes }, cl)
  else
    p:resize(n)
  end
  return p
end

--- session.gpu_pool(n, memory_mib) -> the pool of GPU workers for
-- pd.map{gpus = n}: n workers, worker k bound to device k-1
-- (PDLUA_GPU_DEVICE; a replacement takes the place of the worker it
-- replaces).  Local devices only (see bind).  No memory cap unless asked
-- for (the CUDA driver needs address space beyond any sane RLIMIT_AS, so a
-- GPU worker never gets one; `memory` caps its Lua heap).  Raises, at the
-- caller of pd.map, when this process cannot run n GPU workers.
function M.gpu_pool(n, memory_mib)
  local why = require("pd.gpu").unusable(n)
  if why then error("pd.map: gpus = " .. n .. ": " .. why, 4) end
  local key = "gpus:" .. n .. ":" .. tostring(memory_mib or "")
  local p = S.pools[key]
  if p and not p:closed() then return p end
  return new_pool(key, { workers = n, memory = memory_mib and math.floor(memory_mib * 1048576) or 0,
                         gpus = n }, S.cluster)
end

--- session.pools() -> the pools by key (the session's own table: pd.map's
-- autopump reads it; tests look into it).
function M.pools() return S.pools end

--- session.pids() -> the worker pids of every open pool.
function M.pids()
  local t = {}
  for _, p in pairs(S.pools) do
    if not p:closed() then
      for _, pid in ipairs(p:pids()) do t[#t + 1] = pid end
    end
  end
  return t
end

-- ---------------------------------------------------------------------------
-- pd.init, pd.shutdown, pd.nodes

--- pd.init{cpus=, seed=, memory=, progress=, gpus=, nodes=, discover=,
-- secret=, secret_file=}: optional; without it the first map starts local
-- workers on every CPU (or --cpus).  nodes (or discover) replaces the
-- session's cluster, closing its pools.
function M.init(opts)
  opts = opts or {}
  local o = M.options()
  local remote = (opts.nodes and #require("pd.cluster").url_list(opts.nodes) > 0) or opts.discover
                 or o.nodes or o.discover
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

--- pd.nodes() -> the local machine, then every node of the session (as last heard).
function M.nodes()
  local st = settings()
  local busy = 0
  for _, p in pairs(S.pools) do
    if not p:closed() then busy = busy + p:busy() end
  end
  -- the GPUs here: --gpus / pd.init{gpus=} when given, else the devices seen
  local gpus = S.gpus or M.options().gpus
  if gpus == nil then
    local devs = require("pd.gpu").devices()
    gpus = devs and #devs or 0
  end
  local t = { { url = "local", name = "local", cpus = st.cpus, gpus = gpus, busy = busy, alive = true,
                workers = M.pids() } }
  local cl = ensure_cluster()                  -- cluster: every node, as last heard
  if cl then
    for _, n in ipairs(cl:nodes()) do t[#t + 1] = n end
  end
  return t
end

return M
