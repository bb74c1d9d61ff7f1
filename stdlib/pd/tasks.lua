--- pd.tasks: task sets joined by tubes (guide:
-- docs/tasks.md).  Playdoh's "synchronous interface": `count` nodes
-- started together, one process each, exchanging values through named FIFO
-- tubes along a directed graph the user declares.
--
-- The coordinator (this file) starts the nodes with their tube ends already
-- in place (lua/tubes.c, core/gang.c), sends each one its task, and then
-- only watches: values travel from node to node and never through here.
-- Its jobs are the barrier between init and run, the results, info()
-- questions, and failure: the first node that fails (a Lua error, a crash,
-- a kill) makes the coordinator tell every other node to stop (a blocked
-- pop raises at once), and after a short grace any node still running is
-- killed, so a failing set always ends, with the first error's traceback.
local core = require "pd.core"
local cmap = require "pd.core.map"

local M = {}

-- Control frames (lua/tubes.c knows INFO and ABORT by number too).
M.INIT, M.RUN, M.INFO, M.ABORT = 1, 2, 3, 4
M.READY, M.DONE, M.ERROR, M.INFOR = 11, 12, 13, 14
-- Setting up a set across machines (remote nodes only): the node's call-in,
-- where its out-tubes go, and the name a tube's source sends first.
M.HELLO, M.PEERS, M.TUBE = 21, 22, 23
M.START = tonumber(os.getenv("PDLUA_TASKS_START") or "") or 30   -- seconds a set across
                     -- machines may take to call in (PDLUA_TASKS_START)

M.GRACE = 1.0        -- seconds the other nodes get to stop after a failure

local unpack = table.unpack or unpack  -- luacheck: ignore

-- ---------------------------------------------------------------------------
-- INIT payload: three codec messages, each "len:" prefixed but the last:
-- module paths (decoded first: the task's functions may name modules only
-- they find), the task and the shared arguments (the same bytes for every
-- node), and this node's own part.

local function lp(s) return #s .. ":" .. s end

-- The globals a node's functions see are the node's own (as for pd.map,
-- stdlib/pd/pack.lua): an _ENV upvalue that is not _G (a sandbox, a test
-- framework's environment) is swapped for _G while the task is encoded, in
-- every function reachable from the task through tables and upvalues, and
-- put back afterwards.
local function encode_task(t)
  return require("pd.pack").encode_in_G(t, t.task, true)
end

local function split(s, at)
  local len, rest = s:match("^(%d+):()", at)
  len = tonumber(len)
  return s:sub(rest, rest + len - 1), rest + len
end

--- tasks.unpack_init(payload) -> the node's part of a set (pd.tasknode
-- calls it on the INIT payload that tasks_async below makes): { task,
-- shared, args (each's, then args; .n), seed, bound, index, count, tubes }.
-- Sets the coordinator's module paths first.
function M.unpack_init(payload)
  local paths, at = split(payload, 1)
  paths = cmap.decode(paths)
  package.path, package.cpath = paths.path or package.path, paths.cpath or package.cpath
  local common
  common, at = split(payload, at)
  common = cmap.decode(common)
  local own = cmap.decode(payload:sub(at))
  local args, n = {}, 0
  local e = own.each
  if e ~= nil then
    if type(e) == "table" then
      for i = 1, (e.n or #e) do n = n + 1; args[n] = e[i] end
    else
      n = n + 1; args[n] = e
    end
  end
  local a = common.args
  if a ~= nil then
    for i = 1, (a.n or #a) do n = n + 1; args[n] = a[i] end
  end
  args.n = n
  return { task = common.task, shared = common.shared, args = args, seed = common.seed,
           bound = common.bound,
           index = own.index, count = own.count, tubes = own.tubes }
end

-- ---------------------------------------------------------------------------
-- Checking what the user gave.

local known = { count = 1, tubes = 1, args = 1, each = 1, cpus = 1, nodes = 1, seed = 1,
                shared = 1, _bound = 1 }   -- _bound: the push bound, for specs

local function check(task, opts)
  if type(task) ~= "table" then
    error("pd.tasks: bad argument #1 (task table expected, got " .. type(task) .. ")", 3)
  end
  if type(task.run) ~= "function" then error("pd.tasks: the task has no run function", 3) end
  for _, k in ipairs { "init", "info" } do
    if task[k] ~= nil and type(task[k]) ~= "function" then
      error("pd.tasks: task." .. k .. " must be a function", 3)
    end
  end
  if type(opts) ~= "table" then error("pd.tasks: bad argument #2 (options table expected)", 3) end
  for k in pairs(opts) do
    if not known[k] then error("pd.tasks: unknown option '" .. tostring(k) .. "'", 3) end
  end
  local n = opts.count
  if opts.each and n == nil then n = #opts.each end
  if type(n) ~= "number" or n < 1 or n % 1 ~= 0 then
    error("pd.tasks: count must be a whole number >= 1", 3)
  end
  n = math.floor(n)
  if opts.nodes ~= nil and type(opts.nodes) ~= "table" and type(opts.nodes) ~= "string" then
    error("pd.tasks: nodes must be a list of node URLs", 3)
  end
  if opts.args ~= nil and type(opts.args) ~= "table" then
    error("pd.tasks: args must be a list (the arguments of every node's init)", 3)
  end
  if opts.each ~= nil and (type(opts.each) ~= "table" or #opts.each ~= n) then
    error("pd.tasks: each must be a list of " .. n .. " entries, one per node", 3)
  end
  local tubes = opts.tubes or {}
  if type(tubes) ~= "table" then error("pd.tasks: tubes must be a list of {name, from, to}", 3) end
  local seen = {}
  for i, t in ipairs(tubes) do
    if type(t) ~= "table" or type(t[1]) ~= "string" then
      error("pd.tasks: tube " .. i .. " must be {name, from, to} with a string name", 3)
    end
    for j = 2, 3 do
      local v = t[j]
      if type(v) ~= "number" or v % 1 ~= 0 or v < 1 or v > n then
        error(string.format("pd.tasks: tube %d ('%s'): %s must be a node index from 1 to %d",
                            i, t[1], j == 2 and "from" or "to", n), 3)
      end
    end
    local ko, ki = "out:" .. t[2] .. ":" .. t[1], "in:" .. t[3] .. ":" .. t[1]
    if seen[ko] then
      error(string.format("pd.tasks: two tubes named '%s' go out of node %d", t[1], t[2]), 3)
    end
    if seen[ki] then
      error(string.format("pd.tasks: two tubes named '%s' come into node %d", t[1], t[3]), 3)
    end
    seen[ko], seen[ki] = true, true
  end
  return n, tubes
end

-- ---------------------------------------------------------------------------
-- Capacity: a task set needs all its nodes at once (gang start).  Locally
-- that is one process per node, and the session hosts as many at once as
-- it has CPUs (pd.init{cpus=}, --cpus, or the machine's), counting the
-- nodes of task sets still running.  More is refused at once, with the
-- numbers, rather than started and left to wait for each other.

local running = setmetatable({}, { __mode = "k" })   -- handle -> count

local function capacity(opts)
  local st = require("pd.session").settings()
  local cap = opts.cpus or st.cpus
  local used = 0
  for h, c in pairs(running) do
    if h._status == "running" then used = used + c else running[h] = nil end
  end
  return cap, used
end

-- ---------------------------------------------------------------------------
-- The handle.

local Set = {}
Set.__index = Set
Set.__name = "pd.TaskSet"

local function node_error(h, k, e, kind)
  return require("pd.error").new {
    message = e.message, traceback = e.traceback or "", task = k, index = k,
    node = h._where and h._where[k] or ("local:" .. tostring(h._pids[k])), pid = h._pids[k],
    kind = kind,
    phase = e.phase, origin = "tasks",
  }
end

local function ended(h)
  for k = 1, h.count do if not h._ended[k] then return false end end
  return true
end

local function finish(h, status)
  h._status = status
  h._gang:close()
  running[h] = nil
  if h._links then                         -- across machines: the links and the gang job
    for _, l in ipairs(h._links) do l:close() end
    if status == "done" then h._job:wait(2) end
    h._job:cancel()
    h._job:release()
  end
end

local function start_failing(h)
  if h._failing then return end
  h._failing = core.now() + M.GRACE
  local first = h._primary[1] or h._secondary[1]
  local why = "pd.tasks: the task set failed (node " .. first.index .. ": " ..
              tostring(first.message):gsub("\n.*", "") .. ")"
  for k = 1, h.count do
    if not h._ended[k] and not h._done[k] and h._gang:send(k, M.ABORT, why) then
      h._gang:poke(k)                                  -- a computing node reads it now
    end
  end
end

-- One event from the gang.
local function on_event(h, k, ty, p)
  if ty == false then                                  -- node k ended
    h._ended[k] = true
    if not h._done[k] and not h._reported[k] and not h._killed then
      local msg = h._links and string.format("node %d on %s was lost: its link ended", k,
                                             tostring(h._where[k]))
                  or string.format("node %d (pid %s) died: %s", k, tostring(h._pids[k]), p)
      h._primary[#h._primary + 1] = node_error(h, k, { message = msg, traceback = "" }, "failed")
      start_failing(h)
    end
  elseif ty == M.READY then
    h._ready = h._ready + 1
    if h._ready == h.count and not h._failing then
      for j = 1, h.count do h._gang:send(j, M.RUN, "") end
    end
  elseif ty == M.DONE then
    h._done[k] = true
    h._ndone = h._ndone + 1
    h._results[k] = p
  elseif ty == M.ERROR then
    h._reported[k] = true
    local ok, e = pcall(cmap.decode, p)
    if not ok or type(e) ~= "table" then e = { message = "malformed error from node " .. k } end
    local list = e.secondary and h._secondary or h._primary
    list[#list + 1] = node_error(h, k, e, "error")
    start_failing(h)
  elseif ty == M.INFOR then
    local ok, r = pcall(cmap.decode, p)
    if ok and type(r) == "table" and r.id == h._info_id then
      h._info[k] = r.ok and r.v or nil
      h._info_got[k] = true
    end
  end
end

-- Work for up to `seconds` (nil: until one event); returns after events.
local function pump(h, seconds)
  if h._status ~= "running" then return end
  local step = seconds
  if h._failing then
    local left = h._failing - core.now()
    if left <= 0 then
      h._killed = true
      finish(h, "failed")
      return
    end
    if not step or step < 0 or step > left then step = left end
  end
  if h._job then                           -- across machines: keep the cluster's links alive
    h._job:wait(0.001)
    if not step or step < 0 or step > 0.1 then step = 0.1 end
  end
  local k, ty, p = h._gang:recv(step)
  while k do
    on_event(h, k, ty, p)
    k, ty, p = h._gang:recv(0)
  end
  if h._ndone == h.count and not h._failing then finish(h, "done")
  elseif h._failing and ended(h) then finish(h, "failed") end
end

--- h:status() -> "running", "done", "failed" or "cancelled"
function Set:status()
  if self._status == "running" then pump(self, 0) end
  return self._status
end

--- h:wait([seconds]) -> true once the set is over, or nil, "timeout".
function Set:wait(seconds)
  local deadline = seconds and core.now() + seconds
  while self._status == "running" do
    local left = deadline and deadline - core.now()
    if left and left <= 0 then return nil, "timeout" end
    pump(self, left or -1)
  end
  return true
end

--- h:error() -> the set's error object (nil unless it failed): the first
-- node's own failure, rather than the errors the others saw because of it.
function Set:error()
  if self._status ~= "failed" then return nil end
  return self._primary[1] or self._secondary[1]
end

--- h:results() -> { r1, ..., rn, n = count } by node index: what each
-- node's run returned (or its self.result).  Raises the set's error object
-- when it failed.
function Set:results()
  self:wait()
  if self._status == "cancelled" then error("pd.tasks: task set " .. self.id .. " was cancelled", 2) end
  if self._status == "failed" then error(self:error(), 0) end
  if not self._decoded then
    local r = { n = self.count }
    for k = 1, self.count do r[k] = cmap.decode(self._results[k]) end
    self._decoded = r
  end
  local out = { n = self.count }
  for k = 1, self.count do out[k] = self._decoded[k] end
  return out
end

--- h:info([seconds]) -> { v1, ..., n = count }: each running node's
-- task:info(), asked now (nil for a node that has no info function, has
-- finished, or did not answer within `seconds`, 2 by default).
function Set:info(seconds)
  local out = { n = self.count }
  if self._status ~= "running" then return out end
  self._info_id = (self._info_id or 0) + 1
  self._info, self._info_got = {}, {}
  local req = cmap.encode { id = self._info_id }
  local asked = {}
  for k = 1, self.count do
    if not self._ended[k] and not self._done[k] and self._gang:send(k, M.INFO, req) then
      self._gang:poke(k)
      asked[#asked + 1] = k
    end
  end
  local deadline = core.now() + (seconds or 2)
  while self._status == "running" do
    local all = true
    for _, k in ipairs(asked) do
      if not self._info_got[k] and not self._ended[k] and not self._done[k] then all = false end
    end
    if all then break end
    local left = deadline - core.now()
    if left <= 0 then break end
    pump(self, left)
  end
  for k = 1, self.count do out[k] = self._info[k] end
  return out
end

--- h:cancel(): stop every node now (they are killed); results() raises.
function Set:cancel()
  if self._status == "running" then
    self._killed = true
    finish(self, "cancelled")
  end
end

--- h:pids() -> the node processes' pids by node index (nil once reaped).
function Set:pids()
  local t = {}
  for k = 1, self.count do t[k] = self._pids[k] end
  return t
end

local nsets = 0

-- A set across machines: its nodes run as the tasks of a "gang" map job
-- (one per lent worker, none queued behind another: pd_job_opts.gang) that
-- call the coordinator back on a listener of its own, prove the set's key,
-- and are then told where their out-tubes go (docs/tasks.md, "Across
-- machines").  Returns the gang of control links, the links, the job and
-- where each node is.
local function start_remote(n, tubes, opts)
  local ct = require "pd.core.tubes"
  local map = require "pd.map"
  local key = ct.random(32)
  local host = os.getenv("PDLUA_HOST") or "127.0.0.1"
  local lis = assert(ct.listen("tcp://" .. host .. ":0"))
  local url = "tcp://" .. host .. ":" .. lis:port()
  local args = {}
  for k = 1, n do args[k] = { url = url, key = key, index = k } end
  local job = map.map_async(function(a) return require("pd.tasknode").remote_main(a) end, args,
                            { chunk = 1, retries = 0, nodes = opts.nodes, _gang = true,
                              errors = "collect", progress = false })
  local ctl, got = {}, 0
  local deadline = core.now() + M.START
  local function give_up(msg)
    lis:close()
    for _, c in pairs(ctl) do c.link:close() end
    job:cancel()
    job:release()
    error(msg, 0)
  end
  while got < n do
    job:wait(0.001)                        -- pumps the scheduler (wait(0) does not)
    local _, _, failed = job:progress()
    if failed > 0 then
      local r = job:results()
      for i = 1, n do
        if require("pd.error").is(r[i]) then
          give_up("pd.tasks: node " .. i .. " could not start: " .. tostring(r[i].message))
        end
      end
    end
    if core.now() > deadline then
      give_up(string.format("pd.tasks: cannot start %d nodes at once: only %d called in within "
                            .. "%g s (not enough free workers on the nodes?)", n, got, M.START))
    end
    local l = lis:accept(0.05)
    if l then
      local ty, p
      if ct.handshake({ l }, { "listen" }, key, 5) then ty, p = ct.recv_frame(l, 5) end
      local hello = ty == M.HELLO and cmap.decode(p)
      if hello and not ctl[hello.index] then
        ctl[hello.index] = { link = l, port = hello.port, host = l:peer():match("^(.*):%d+$") }
        got = got + 1
      else
        l:close()
      end
    end
  end
  lis:close()
  local links, where = {}, {}
  for k = 1, n do
    local outs, nin = {}, 0
    for _, t in ipairs(tubes) do
      if t[2] == k then outs[#outs + 1] = { t[1], ctl[t[3]].host, ctl[t[3]].port, t[3] } end
      if t[3] == k then nin = nin + 1 end
    end
    ct.send_frame(ctl[k].link, M.PEERS, cmap.encode { outs = outs, nin = nin })
    links[k], where[k] = ctl[k].link, ctl[k].host
  end
  return ct.gang_links(links), links, job, where
end

--- pd.tasks_async(task, opts) -> handle (see the guide for opts).
function M.tasks_async(task, opts)
  opts = opts or {}
  local n, tubes = check(task, opts)
  local cap, used = capacity(opts)
  if not opts.nodes and n + used > cap then
    error(string.format("pd.tasks: cannot start %d nodes at once: this session hosts %d at a "
                        .. "time%s (raise --cpus or pd.init{cpus=}, or use fewer nodes)", n, cap,
                        used > 0 and (" and " .. used .. " are busy in other task sets") or ""), 2)
  end
  local exe = core.exe()
  if not exe then error("pd.tasks: cannot find the pdlua executable to start nodes", 2) end
  local st = require("pd.session").settings()
  local seed = opts.seed
  nsets = nsets + 1
  if seed == nil then
    local base = tonumber(st.seed) or math.floor(core.now() * 1e6) % 2147483647
    seed = base * 1000003 + 7919 * nsets
  end
  local paths = cmap.encode { path = package.path, cpath = package.cpath }
  local ok, common = pcall(encode_task, { task = task, args = opts.args, seed = math.floor(seed),
                                          shared = opts.shared, bound = opts._bound })
  if not ok then error("pd.tasks: the task cannot be sent to a node: " .. tostring(common), 2) end
  local head = lp(paths) .. lp(common)
  local gang, places, links, job, where
  if opts.nodes then
    gang, links, job, where = start_remote(n, tubes, opts)
    places = {}
    for k = 1, n do
      places[k] = {}
      for t, tb in ipairs(tubes) do                   -- names only: the links are in place
        if tb[2] == k then places[k][#places[k] + 1] = { t, "out" } end
        if tb[3] == k then places[k][#places[k] + 1] = { t, "in" } end
      end
    end
  else
    gang, places = require("pd.core.tubes").gang {
      argv = { exe, "-e", "require('pd.tasknode').local_main()" }, count = n, tubes = tubes,
      env = { "OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1" },
    }
  end
  local h = setmetatable({
    id = nsets, count = n, _gang = gang, _status = "running", _pids = {}, _ended = {},
    _done = {}, _reported = {}, _results = {}, _ndone = 0, _ready = 0, _primary = {},
    _secondary = {}, _links = links, _job = job, _where = where,
  }, Set)
  if not links then running[h] = n end
  for k = 1, n do
    h._pids[k] = gang:pid(k)
    local mine = {}
    for i, pl in ipairs(places[k]) do
      local tb = tubes[pl[1]]
      mine[i] = { tb[1], pl[2], pl[3], pl[2] == "in" and tb[2] or tb[3] }
    end
    local each = opts.each and opts.each[k]
    local okk, own = pcall(cmap.encode, { index = k, count = n, tubes = mine, each = each })
    if not okk then
      h:cancel()
      error("pd.tasks: each[" .. k .. "] cannot be sent to a node: " .. tostring(own), 2)
    end
    gang:send(k, M.INIT, head .. own)
  end
  return h
end

--- pd.tasks(task, opts) -> results by node index (raises on failure).
function M.tasks(task, opts)
  local ok, h = pcall(M.tasks_async, task, opts)
  if not ok then error(h, 2) end
  return h:results()
end

return M
