--- pd.tasknode: the body of one node of a task set (docs/tasks.md).
--
-- Started by pd.tasks (stdlib/pd/tasks.lua) as
-- `pdlua -e "require('pd.tasknode')"` with its control socket on fd 3 and
-- its tube ends on fds 4, 5, ...  It runs `init`, says READY, waits for RUN
-- (every node of the set has initialised by then), runs `run`, writes out
-- what its tubes still hold, sends the result, and exits.  Any error goes
-- to the coordinator with its traceback, and the process exits: its tubes
-- close, so the nodes that wait on them hear of it at once.
local pd = require "pd"
local cmap = require "pd.core.map"
local ctubes = require "pd.core.tubes"
local P = require "pd.tasks"

local unpack = table.unpack or unpack  -- luacheck: ignore

local N = ctubes.node(3)

local function quiet() N:watch(function() end, false) end   -- no more pokes

-- Message handler: any error object -> {message, traceback}.  The node is
-- failing: it stops listening for pokes first (an abort arriving now must
-- not raise inside the handler or in fail).
local function handler(e)
  quiet()
  local msg = e
  if type(e) ~= "string" then
    local mt = getmetatable(e)
    if mt and mt.__tostring then msg = tostring(e)
    else msg = "(error object is a " .. type(e) .. " value)" end
  end
  local tb = debug.traceback("", 2):gsub("^\n", "")
  return { message = msg, traceback = tb }
end

local function fail(e, phase)
  quiet()
  if type(e) ~= "table" then e = { message = tostring(e), traceback = "" } end
  local rec = { message = tostring(e.message), traceback = tostring(e.traceback or ""),
                phase = phase, secondary = N:aborted() }
  local ok, msg = pcall(cmap.encode, rec)
  if ok then pcall(N.send, N, P.ERROR, msg) end
  os.exit(0)
end

-- INIT: module paths, the task (shared by every node), this node's part.
local t, payload = N:recv()
if t ~= P.INIT then os.exit(0) end
local ok0, spec = xpcall(P._unpack_init, handler, payload)
if not ok0 then fail(spec, "init") end
local task = spec.task

-- The node object: pd.tasks' methods first, then the task's own fields
-- (read through); what the task assigns lands on the node itself.
local Node = {}
function Node.push(_, name, v) return N:push(name, v) end
function Node.pop(_, name, seconds) return N:pop(name, seconds) end
function Node.poll(_, name) return N:poll(name) end
function Node.pending(_, name) return N:pending(name) end
if spec.bound then N:set_bound(spec.bound) end
local self = setmetatable({ index = spec.index, count = spec.count, tubes_in = {}, tubes_out = {} }, {
  __index = function(_, k)
    local v = Node[k]
    if v ~= nil then return v end
    return task[k]
  end,
})
local names = {}
for _, tb in ipairs(spec.tubes) do
  N:add(tb[1], tb[2], tb[3], tb[4])
  local list = tb[2] == "in" and self.tubes_in or self.tubes_out
  list[#list + 1] = tb[1]
  names[#names + 1] = tb[2] .. " '" .. tb[1] .. "'"
end
table.sort(self.tubes_in)
table.sort(self.tubes_out)
debug.getregistry()["pd.tubes.names"] = #names > 0 and "it has " .. table.concat(names, ", ")
                                        or "it has no tubes"

-- pd.rng() in a node: the stream (seed, node index) of pd.random.
do
  local R = require "pd.random"
  local g = require("pd.core.array").random.stream(spec.seed, spec.index)
  R.rng = function() return g end
end
pd.shared = spec.shared

-- INFO while the node waits or computes: task:info() goes back live.
local function watcher(ty, p)
  if ty ~= P.INFO then return end
  local req = cmap.decode(p)
  local ok, v = true, nil
  if type(task.info) == "function" then ok, v = pcall(task.info, self) end
  local enc_ok, msg = pcall(cmap.encode, { id = req.id, ok = ok, v = v })
  if not enc_ok then msg = cmap.encode { id = req.id, ok = false, v = "info: " .. tostring(msg) } end
  N:send(P.INFOR, msg)
end
-- The watcher runs inside init and run only (an abort raised by it is then
-- caught like any error there); from READY to RUN there is no hook at all:
-- RUN is for recv below, never for the watcher.
local ok, err = xpcall(function()
  N:watch(watcher, true)
  if type(task.init) == "function" then task.init(self, unpack(spec.args, 1, spec.args.n)) end
  N:watch(watcher, false)
end, handler)
if not ok then fail(err, "init") end
N:send(P.READY, "")

repeat
  t, payload = N:recv()
  if t == P.INFO then watcher(t, payload) end
until t ~= P.INFO
if t ~= P.RUN then os.exit(0) end                 -- aborted before the start, or orphaned

local r
ok, err = xpcall(function()
  N:watch(watcher, true)
  r = task.run(self)
  N:flush()
  N:watch(watcher, false)
end, handler)
if not ok then fail(err, "run") end
if r == nil then r = rawget(self, "result") end
local enc_ok, msg = pcall(cmap.encode, r)
if not enc_ok then
  fail({ message = "run returned a value that cannot be sent back: " .. tostring(msg),
         traceback = "" }, "result")
end
N:send(P.DONE, msg)
N:close()
os.exit(0)
