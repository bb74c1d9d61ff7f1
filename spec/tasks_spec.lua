-- pd.tasks and tubes on local nodes (docs/tasks.md):
-- Playdoh's own cases ({9, 10} and the ring's {7, 7, 7, 7}), FIFO order,
-- arrays as raw bytes, pop timeouts and poll, bounded push with
-- back-pressure, failures injected (a Lua error, kill -9, an error in init)
-- with every other node's blocked pop erroring promptly, info(), cancel,
-- gang-start refusals.  Behaviour only: speed lives in bench/tubes.
local H = require "helper"
local pd = require "pd"
local cmap = require "pd.core.map"
local core = require "pd.core"

local function alive(pids)
  local n = 0
  for _, pid in pairs(pids) do if pid and cmap.alive(pid) then n = n + 1 end end
  return n
end

-- Playdoh's test_synchandler test_2: node 1 pushes 1 on tube1; node 2 adds it.
local Tube = {}
function Tube:init(x) self.x = x end
function Tube:run()
  if self.index == 1 then
    self:push("tube1", 1)
    return self.x * 3
  end
  return self.x * 3 + self:pop("tube1")
end

-- test_4: a ring of 'right' tubes, three rounds of push x+1, x += pop.
local Ring = {}
function Ring:init(x, iterations) self.x, self.iterations = x, iterations end
function Ring:run()
  for _ = 1, self.iterations do
    self:push("right", self.x + 1)
    self.x = self.x + self:pop("right")
  end
  self.result = self.x               -- Playdoh's get_result: self.result
end

describe("pd.tasks", function()
  setup(function() pd.init { cpus = 4 } end)

  it("gives {9, 10} for a tube between two nodes (Playdoh test_2)", function()
    local r = pd.tasks(Tube, { count = 2, tubes = { { "tube1", 1, 2 } }, args = { 3 } })
    assert.same({ 9, 10, n = 2 }, r)
  end)

  it("gives {7, 7, 7, 7} on a four-node ring of 'right' tubes (Playdoh test_4)", function()
    local r = pd.tasks(Ring, { count = 4, tubes = pd.topology.ring(4), args = { 0, 3 } })
    assert.same({ 7, 7, 7, 7, n = 4 }, r)
  end)

  -- the same two across two loopback nodes: spec/tasks_cluster_spec.lua

  it("passes each[i] then args to init, and knows index, count and tube names", function()
    local T = {}
    function T:init(a, b, c) self.got = { a, b, c } end
    function T:run()
      return { got = self.got, index = self.index, count = self.count,
               tin = self.tubes_in, tout = self.tubes_out, const = self.const }
    end
    T.const = "shared field"
    local r = pd.tasks(T, { count = 3, each = { { 1 }, { 2 }, { 3 } }, args = { "x", "y" },
                            tubes = pd.topology.line(3) })
    for k = 1, 3 do
      assert.same({ k, "x", "y" }, r[k].got)
      assert.equals(k, r[k].index)
      assert.equals(3, r[k].count)
      assert.equals("shared field", r[k].const)
    end
    assert.same({ "right" }, r[1].tout)
    assert.same({ "left" }, r[1].tin)
    assert.same({ "left", "right" }, r[2].tout)
    assert.same({ "left", "right" }, r[2].tin)
  end)

  it("keeps FIFO order and carries tables, strings, functions and arrays intact", function()
    local T = {}
    function T:run()
      if self.index == 1 then
        for i = 1, 2000 do self:push("x", i) end
        self:push("x", { k = "v", list = { 1, 2.5 } })
        self:push("x", "a\0b")
        self:push("x", function(a) return a * 2 end)
        self:push("x", pd.range(1, 300000))                -- 2.4 MB: more than a pipe holds
        self:push("x", pd.array({ { 1, 2 }, { 3, 4 } }, "i32"))
        return true
      end
      for i = 1, 2000 do assert(self:pop("x") == i, "out of order at " .. i) end
      local t, s, f, big, small = self:pop("x"), self:pop("x"), self:pop("x"), self:pop("x"),
                                  self:pop("x")
      return { t = t, s = s, f = f(21), n = #big, last = big[#big], sum = big:sum(),
               dtype = small:dtype(), shape = { small:shape() }, v = small:get(2, 1) }
    end
    local r = pd.tasks(T, { count = 2, tubes = { { "x", 1, 2 } } })
    local b = r[2]
    assert.same({ k = "v", list = { 1, 2.5 } }, b.t)
    assert.equals("a\0b", b.s)
    assert.equals(42, b.f)
    assert.equals(300000, b.n)
    assert.equals(300000, b.last)
    assert.equals(300000 * 300001 / 2, b.sum)
    assert.equals("i32", b.dtype)
    assert.same({ 2, 2 }, b.shape)
    assert.equals(3, b.v)
  end)

  it("pop waits with a timeout; poll never waits", function()
    local T = {}
    function T:run()
      if self.index == 1 then
        local v, why = self:pop("back", 0.05)            -- nothing yet: times out
        self:push("x", "hello")
        local got = self:pop("back")
        return { v = v, why = why, got = got }
      end
      local first = self:poll("x")                       -- maybe nil: never blocks
      local v = self:pop("x", 5)
      self:push("back", "ok")
      return { first = first, v = v, after = self:poll("x") }
    end
    local r = pd.tasks(T, { count = 2, tubes = { { "x", 1, 2 }, { "back", 2, 1 } } })
    assert.is_nil(r[1].v)
    assert.equals("timeout", r[1].why)
    assert.equals("ok", r[1].got)
    assert.is_nil(r[2].first)
    assert.equals("hello", r[2].v)
    assert.is_nil(r[2].after)
  end)

  it("bounds what a push leaves unsent, and back-pressure loses nothing", function()
    local T = {}
    function T:run()
      local size = 32768                                 -- 256 KiB per value
      if self.index == 1 then
        self:push("go", true)
        local most = 0
        for i = 1, 24 do
          self:push("x", pd.full(size, i))
          local p = self:pending("x")
          if p > most then most = p end
        end
        return most
      end
      self:pop("go")
      local sum = 0
      for i = 1, 24 do
        local a = self:pop("x")
        assert(#a == size and a[1] == i and a[size] == i, "value " .. i .. " damaged")
        sum = sum + a[1]
      end
      return sum
    end
    local bound = 65536
    local r = pd.tasks(T, { count = 2, tubes = { { "x", 1, 2 }, { "go", 1, 2 } }, _bound = bound })
    assert.equals(24 * 25 / 2, r[2])
    -- never more than the bound plus the one value just pushed
    assert.is_true(r[1] <= bound + 32768 * 8 + 64, "unsent bytes reached " .. r[1])
  end)

  it("fails the whole set with the first error; blocked pops elsewhere error promptly", function()
    local dir = os.tmpname()
    local T = { dir = dir }
    function T:run()
      if self.index == 2 then
        self:pop("never", 0.1)                           -- let the others block first
        error("boom on node two")
      end
      local ok, e = pcall(self.pop, self, self.index == 1 and "a" or "b")
      local f = assert(io.open(self.dir .. "." .. self.index, "w"))
      f:write(tostring(ok), " ", tostring(e))
      f:close()
      error(e, 0)
    end
    local t0 = core.now()
    local h = pd.tasks_async(T, { count = 3, tubes = { { "a", 2, 1 }, { "b", 2, 3 }, { "never", 3, 2 } } })
    assert.is_true(h:wait(10))
    assert.is_true(core.now() - t0 < 5, "took " .. (core.now() - t0) .. " s")
    assert.equals("failed", h:status())
    local ok, e = pcall(h.results, h)
    assert.is_false(ok)
    assert.is_true(pd.iserror(e))
    assert.equals(2, e.index)
    assert.matches("boom on node two", e.message)
    assert.matches("run", e.traceback)
    for _, k in ipairs { 1, 3 } do
      local f = assert(io.open(dir .. "." .. k))
      local s = f:read("*a")
      f:close()
      os.remove(dir .. "." .. k)
      assert.matches("^false ", s)
      assert.matches("node 2", s)
    end
    os.remove(dir)
    assert.equals(0, alive(h:pids()))
  end)

  it("fails when a node is killed (kill -9), and the others' pops do not hang", function()
    local T = {}
    function T:run()
      if self.index == 2 then
        while true do self:poll("nothing") end         -- busy until killed
      end
      return self:pop("x")
    end
    local h = pd.tasks_async(T, { count = 2, tubes = { { "x", 2, 1 }, { "nothing", 1, 2 } } })
    local pid = h:pids()[2]
    assert.is_truthy(pid)
    os.execute("kill -9 " .. pid)
    assert.is_true(h:wait(10))
    local e = h:error()
    assert.equals(2, e.index)
    assert.matches("died: killed by signal 9", e.message)
    assert.equals(0, alive(h:pids()))
  end)

  it("fails when init raises, and run never starts", function()
    local T = {}
    function T:init() if self.index == 3 then error("bad init") end end
    function T:run() return self:pop("x") end
    local ok, e = pcall(pd.tasks, T, { count = 3, tubes = { { "x", 1, 2 }, { "x", 2, 3 }, { "x", 3, 1 } } })
    assert.is_false(ok)
    assert.matches("bad init", e.message)
    assert.equals("init", e.phase)
  end)

  it("reports a pop on a tube whose source has finished as an error, not a hang", function()
    local T = {}
    function T:run()
      if self.index == 1 then self:push("x", 1); return 0 end
      return self:pop("x") + self:pop("x")
    end
    local ok, e = pcall(pd.tasks, T, { count = 2, tubes = { { "x", 1, 2 } } })
    assert.is_false(ok)
    assert.matches("tube 'x' is closed", e.message)
  end)

  it("answers info() live, and cancel() stops every node", function()
    local T = {}
    function T:run()
      self.state = "waiting " .. self.index
      while true do self:pop("x", 0.05) end
    end
    function T:info() return self.state end
    local h = pd.tasks_async(T, { count = 2, tubes = { { "x", 1, 2 }, { "x", 2, 1 } } })
    local inf = H.wait_until(function()
      local i = h:info(1)
      return i[1] and i[2] and i
    end, 10)
    assert.same({ "waiting 1", "waiting 2", n = 2 }, inf)
    local pids = h:pids()
    h:cancel()
    assert.equals("cancelled", h:status())
    assert.equals(0, alive(pids))
    assert.has_error(function() h:results() end)
  end)

  it("answers info() and stops on a failure while a node computes (no tube calls)", function()
    if pd.vm:match("LuaJIT") then
      pending("LuaJIT's compiled loops run no hooks: info comes at the next tube call there")
      return
    end
    local T = {}
    function T:run()
      if self.index == 2 then
        self:pop("go")
        error("node two gives up")
      end
      self.i = 0
      while true do self.i = self.i + 1 end           -- no tube call, ever
    end
    function T:info() return self.i end
    -- a long grace, so that "stopped on the abort" and "killed after the
    -- grace" stay far apart in time even on a slow (sanitized, loaded) machine
    local tasks = require "pd.tasks"
    local grace = tasks.GRACE
    tasks.GRACE = 5
    finally(function() tasks.GRACE = grace end)
    local h = pd.tasks_async(T, { count = 2, tubes = { { "go", 1, 2 } } })
    local inf = H.wait_until(function()
      local i = h:info(1)
      return i[1] and i[1] > 0 and i
    end, 10)
    assert.is_truthy(inf)
    assert.is_nil(inf[2])                              -- blocked in pop, no info function value
    -- node 2 dies; the coordinator's abort must stop node 1's endless loop
    os.execute("kill -9 " .. h:pids()[2])
    local t0 = core.now()
    assert.is_true(h:wait(10))
    local e = h:error()
    assert.equals(2, e.index)
    -- node 1 stopped on the abort (not killed after the grace)
    assert.is_true(core.now() - t0 < 4, "took " .. (core.now() - t0) .. " s")
  end)

  it("refuses a set larger than the session can host at once, and bad tubes", function()
    local T = { run = function() end }
    assert.has_error(function() pd.tasks(T, { count = 5 }) end,
                     nil)
    local ok, e = pcall(pd.tasks, T, { count = 5 })
    assert.is_false(ok)
    assert.matches("cannot start 5 nodes at once: this session hosts 4", e)
    ok, e = pcall(pd.tasks, T, { count = 2, tubes = { { "x", 1, 2 }, { "x", 1, 2 } } })
    assert.matches("two tubes named 'x' go out of node 1", e)
    ok, e = pcall(pd.tasks, T, { count = 2, tubes = { { "x", 1, 3 } } })
    assert.matches("to must be a node index from 1 to 2", e)
    ok, e = pcall(pd.tasks, {}, { count = 2 })
    assert.matches("no run function", e)
    ok, e = pcall(pd.tasks, T, { count = 2, bogus = 1 })
    assert.matches("unknown option 'bogus'", e)
    -- a push on a tube the node does not have names what it has
    local U = { run = function(self) self:push("nope", 1) end }
    ok, e = pcall(pd.tasks, U, { count = 2, tubes = { { "x", 1, 2 } } })
    assert.matches("no tube 'nope' going out", e.message)
  end)

  it("keeps a tube usable after a push that cannot encode its value", function()
    local T = {}
    function T:run()
      if self.index == 1 then
        self:push("x", 1)
        local co = coroutine.create(function() end)
        local ok, e = pcall(self.push, self, "x", { 2, co })   -- refused: a coroutine
        self:push("x", 3)
        return { ok = ok, e = tostring(e) }
      end
      return { self:pop("x"), self:pop("x"), self:poll("x") }
    end
    local r = pd.tasks(T, { count = 2, tubes = { { "x", 1, 2 } } })
    assert.is_false(r[1].ok)
    assert.matches("coroutine", r[1].e)
    assert.same({ 1, 3 }, r[2])
  end)

  it("counts the nodes of running sets against what the session hosts", function()
    local T = { run = function(self) return self:pop("x") end }
    local a = pd.tasks_async(T, { count = 2, tubes = { { "x", 1, 2 }, { "x", 2, 1 } } })
    local b = pd.tasks_async(T, { count = 2, tubes = { { "x", 1, 2 }, { "x", 2, 1 } } })
    local ok, e = pcall(pd.tasks_async, T, { count = 1 })
    assert.is_false(ok)
    assert.matches("4 are busy in other task sets", e)
    a:cancel()
    local c = pd.tasks_async({ run = function() return "ok" end }, { count = 2 })
    assert.same({ "ok", "ok", n = 2 }, c:results())
    b:cancel()
    assert.equals("cancelled", a:status())
    assert.equals("cancelled", b:status())
  end)

  it("draws pd.rng() from the stream (seed, node index)", function()
    local T = { run = function() return pd.rng():uniform() end }
    local a = pd.tasks(T, { count = 2, seed = 11 })
    local b = pd.tasks(T, { count = 2, seed = 11 })
    assert.same(a, b)
    assert.are_not.equal(a[1], a[2])
  end)
end)

describe("tube links between machines", function()
  local ct = require "pd.core.tubes"

  local function pair()
    local lfd, port = ct.tcp_listen()
    local d = assert(ct.tcp_dial("127.0.0.1", port, 5))
    local a = assert(ct.tcp_accept(lfd, 5))
    ct.close_fd(lfd)
    return d, a
  end

  -- both ends in one call: handshake runs all its links at once
  local function both(key_d, key_l)
    local d, a = pair()
    local ok, err = ct.handshake({ d, a }, { "dial", "listen" }, { key_d, key_l }, 5)
    ct.close_fd(d); ct.close_fd(a)
    return ok, err
  end

  it("prove the set's key with the pd_auth handshake, and refuse a wrong one", function()
    local ok, err = both("the set key", "the set key")
    assert.is_true(ok, err)
    ok, err = both("a wrong key", "the set key")
    assert.is_nil(ok)
    assert.matches("does not hold the set's key", err)
  end)
end)

describe("pd.topology", function()
  local T = pd.topology
  it("builds rings, lines, grids, stars and complete graphs", function()
    assert.same({ { "right", 1, 2 }, { "right", 2, 3 }, { "right", 3, 1 } }, T.ring(3))
    assert.same({ { "left", 1, 2 }, { "left", 2, 1 } }, T.ring(2, "left"))
    assert.same({ { "right", 1, 2 }, { "left", 2, 1 }, { "right", 2, 3 }, { "left", 3, 2 } }, T.line(3))
    assert.equals(0, #T.line(1))
    local g = T.grid(2, 2)
    assert.equals(8, #g)                                 -- 4 edges, both ways
    assert.equals(16, #T.grid(2, 2, true))
    assert.equals(6, #T.star(4))
    assert.same({ "1->3", 1, 3 }, T.star(4)[3])
    assert.equals(12, #T.all(4))
    assert.equals("2->1", T.edge(2, 1))
    assert.has_error(function() T.ring(0) end)
  end)

  it("gives tube lists pd.tasks accepts, with values flowing on a grid", function()
    local G = {}
    function G:run()
      for _, name in ipairs(self.tubes_out) do self:push(name, self.index) end
      local s = 0
      for _, name in ipairs(self.tubes_in) do s = s + self:pop(name) end
      return s
    end
    local r = pd.tasks(G, { count = 4, tubes = T.grid(2, 2) })
    -- node 1 (1,1) hears from 2 (right of it) and 3 (below it)
    assert.same({ 5, 5, 5, 5, n = 4 }, r)
    r = pd.tasks(G, { count = 4, tubes = T.all(4) })
    assert.same({ 9, 8, 7, 6, n = 4 }, r)
  end)
end)
