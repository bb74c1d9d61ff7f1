--- pd.tasknode: the body of one node of a task set (docs/tasks.md).
--
-- On the coordinator's machine a node is a process of its own, started by
-- pd.tasks (stdlib/pd/tasks.lua) as
-- `pdlua -e "require('pd.tasknode').local_main()"` with its control socket
-- on fd 3 and its tube ends (pipes) on fds 4, 5, ...  On another machine it
-- is a task on a worker that node lends (remote_main): it dials the
-- coordinator and its peers itself, every link proving the set's key.
-- Either way serve() runs `init`, says READY, waits for RUN (every node of
-- the set has initialised by then), runs `run`, writes out what its tubes
-- still hold and sends the result.  Any error goes to the coordinator with
-- its traceback, and the node ends: its tubes close, so the nodes that wait
-- on them hear of it at once.
local pd = require "pd"
local cmap = require "pd.core.map"
local ctubes = require "pd.core.tubes"
local P = require "pd.tasks"

local unpack = table.unpack or unpack  -- luacheck: ignore

local M = {}

--- Serve one task set on node N (a pd.TaskNode whose control link is
-- open).  Returns when the node is done or has failed (after reporting).
function M.serve(N)
  local function quiet() N:watch(function() end, false) end   -- no more pokes

  -- Message handler: any error object -> {message, traceback}.  The node
  -- is failing: it stops listening for pokes first (an abort arriving now
  -- must not raise inside the handler or in fail).
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
    return false
  end

  -- INIT: module paths, the task (shared by every node), this node's part.
  local t, payload = N:recv()
  if t ~= P.INIT then return false end
  local ok0, spec = xpcall(P.unpack_init, handler, payload)
  if not ok0 then return fail(spec, "init") end
  local task = spec.task

  -- The node object: pd.tasks' methods first, then the task's own fields
  -- (read through); what the task assigns lands on the node itself.
  local Node = {}
  function Node.push(_, name, v) return N:push(name, v) end
  function Node.pop(_, name, seconds) return N:pop(name, seconds) end
  function Node.poll(_, name) return N:poll(name) end
  function Node.pending(_, name) return N:pending(name) end
  if spec.bound then N:set_bound(spec.bound) end
  local self = setmetatable({ index = spec.index, count = spec.count, tubes_in = {},
                              tubes_out = {} }, {
    __index = function(_, k)
      local v = Node[k]
      if v ~= nil then return v end
      return task[k]
    end,
  })
  local names = {}
  for _, tb in ipairs(spec.tubes) do
    if tb[3] then N:add(tb[1], tb[2], tb[3], tb[4]) end    -- remote: added already
    local list = tb[2] == "in" and self.tubes_in or self.tubes_out
    list[#list + 1] = tb[1]
    names[#names + 1] = tb[2] .. " '" .. tb[1] .. "'"
  end
  table.sort(self.tubes_in)
  table.sort(self.tubes_out)
  debug.getregistry()["pd.tubes.names"] = #names > 0 and "it has " .. table.concat(names, ", ")
                                          or "it has no tubes"

  -- pd.rng() in a node: the stream (seed, node index) of pd.random; both it
  -- and pd.shared are put back afterwards (a remote node is a lent worker).
  local R = require "pd.random"
  local saved_rng, saved_shared = R.rng, pd.shared
  local g = require("pd.core.random").stream(spec.seed, spec.index)
  R.rng = function() return g end
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

  local function body()
    -- The watcher runs inside init and run only (an abort raised by it is
    -- then caught like any error there); from READY to RUN there is no hook
    -- at all: RUN is for recv below, never for the watcher.
    local ok, err = xpcall(function()
      N:watch(watcher, true)
      if type(task.init) == "function" then task.init(self, unpack(spec.args, 1, spec.args.n)) end
      N:watch(watcher, false)
    end, handler)
    if not ok then return fail(err, "init") end
    N:send(P.READY, "")

    repeat
      t, payload = N:recv()
      if t == P.INFO then watcher(t, payload) end
    until t ~= P.INFO
    if t ~= P.RUN then return false end            -- aborted before the start, or orphaned

    local r
    ok, err = xpcall(function()
      N:watch(watcher, true)
      r = task.run(self)
      N:flush()
      N:watch(watcher, false)
    end, handler)
    if not ok then return fail(err, "run") end
    if r == nil then r = rawget(self, "result") end
    local enc_ok, msg = pcall(cmap.encode, r)
    if not enc_ok then
      return fail({ message = "run returned a value that cannot be sent back: " .. tostring(msg),
                    traceback = "" }, "result")
    end
    N:send(P.DONE, msg)
    return true
  end
  local ok, res = pcall(body)
  R.rng, pd.shared = saved_rng, saved_shared
  if not ok then return false end                  -- the coordinator is gone
  return res
end

--- A local node: its own process, control on fd 3, tubes already in place.
function M.local_main()
  local N = ctubes.node(3)
  M.serve(N)
  N:close()
  os.exit(0)
end

--- A node on another machine (a task of pd.tasks' gang job, on a lent
-- worker): a = {url = the coordinator's listener, key = the set's key,
-- index = this node}.  Dials the coordinator, listens for its in-tubes,
-- learns where its out-tubes go, links them all (each link proves the key),
-- then serves the set.
function M.remote_main(a)
  local links, fds = {}, {}
  local lfd
  local function close_all()
    for _, l in ipairs(links) do l:close() end
    for _, fd in ipairs(fds) do ctubes.close_fd(fd) end
    if lfd then ctubes.close_fd(lfd) end
    links, fds, lfd = {}, {}, nil
  end
  local function check(v, err, what)
    if not v then
      close_all()
      error("pd.tasks: node " .. a.index .. ": " .. what .. ": " .. tostring(err), 0)
    end
    return v
  end
  local ctl = check(ctubes.dial(a.url, 10))
  links[#links + 1] = ctl
  check(ctubes.handshake({ ctl }, { "dial" }, a.key, 10), nil, "the coordinator")
  local port
  lfd, port = ctubes.tcp_listen()
  check(lfd, port, "listening for tubes")
  ctubes.send_frame(ctl, P.HELLO, cmap.encode { index = a.index, port = port })
  local ty, p = ctubes.recv_frame(ctl, 120)
  if ty ~= P.PEERS then close_all(); return false end
  local peers = cmap.decode(p)        -- outs = {{name, host, port, to}}, nin = n
  local hs, roles, outs, ins = {}, {}, {}, {}
  for i, o in ipairs(peers.outs) do
    local fd, err = ctubes.tcp_dial(o[2], o[3], 10)
    check(fd, err, "tube '" .. o[1] .. "'")
    fds[#fds + 1] = fd
    outs[i] = fd
    hs[#hs + 1], roles[#roles + 1] = fd, "dial"
  end
  for i = 1, peers.nin do
    local fd = check(ctubes.tcp_accept(lfd, 30), "nobody came", "an in-tube")
    fds[#fds + 1] = fd
    ins[i] = fd
    hs[#hs + 1], roles[#roles + 1] = fd, "listen"
  end
  ctubes.close_fd(lfd)
  lfd = nil
  check(ctubes.handshake(hs, roles, a.key, 30), nil, "tubes")
  for i, o in ipairs(peers.outs) do
    ctubes.send_frame(outs[i], P.TUBE, cmap.encode { name = o[1], from = a.index })
  end
  local names = {}
  for i = 1, peers.nin do
    local t2, q = ctubes.recv_frame(ins[i], 30)
    check(t2 == P.TUBE, q, "an in-tube's name")
    names[i] = cmap.decode(q)
  end
  -- from here the node owns the tube descriptors (node:close closes them)
  local N = ctubes.node(ctl:fd())
  for i, o in ipairs(peers.outs) do N:add(o[1], "out", outs[i], o[4]) end
  for i = 1, peers.nin do N:add(names[i].name, "in", ins[i], names[i].from) end
  fds = {}
  local ok = M.serve(N)
  N:close()
  close_all()
  N = nil
  collectgarbage()
  return ok
end

return M
