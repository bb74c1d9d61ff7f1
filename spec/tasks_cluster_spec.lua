-- pd.tasks across machines: two `pdlua serve` nodes on loopback ports, the
-- nodes of a set on workers they lend, tubes as direct tcp links between
-- those workers (each proving the set's key), never through the
-- coordinator.  Playdoh's {9, 10} and ring {7, 7, 7, 7}, arrays, a node
-- that errors, a machine lost mid-set (kill -9 of its `pdlua serve`), and
-- a set larger than the cluster.  Every process is killed and checked gone.
local H = require "helper"
local C = require "cluster_helper"

local SETS = [=[
local pd = require "pd"
local nodes = { arg[1], arg[2] }
local what, mark = arg[3], arg[4]
local Tube = {}
function Tube:init(x) self.x = x end
function Tube:run()
  if self.index == 1 then self:push("tube1", 1); return self.x * 3 end
  return self.x * 3 + self:pop("tube1")
end
local Ring = {}
function Ring:init(x, it) self.x, self.it = x, it end
function Ring:run()
  for _ = 1, self.it do self:push("right", self.x + 1); self.x = self.x + self:pop("right") end
  return { x = self.x, on = os.getenv("PDLUA_NODE_NAME") }
end
if what == "playdoh" then
  local r = pd.tasks(Tube, { count = 2, tubes = { { "tube1", 1, 2 } }, args = { 3 }, nodes = nodes })
  print("tube", r[1], r[2], r.n)
  r = pd.tasks(Ring, { count = 4, tubes = pd.topology.ring(4), args = { 0, 3 }, nodes = nodes })
  local on = {}
  for k = 1, 4 do on[r[k].on or "?"] = true; io.write(r[k].x, " ") end
  print("ring", on.ta and "ta" or "", on.tb and "tb" or "")
  local A = { run = function(self)
    if self.index == 1 then self:push("x", pd.range(1, 200000)); return 0 end
    local a = self:pop("x"); return a:sum() + #a
  end }
  r = pd.tasks(A, { count = 2, tubes = { { "x", 1, 2 } }, nodes = nodes })
  print("array", r[2])
elseif what == "error" then
  local E = { run = function(self)
    if self.index == 2 then self:pop("never", 0.2); error("remote boom") end
    return self:pop("x")
  end }
  local t0 = require("pd.core").now()
  local ok, e = pcall(pd.tasks, E, { count = 2, tubes = { { "x", 2, 1 }, { "never", 1, 2 } },
                                     nodes = nodes })
  print("error", ok, e.index, e.message, require("pd.core").now() - t0 < 10)
elseif what == "lost" then
  local L = { run = function(self)
    if self.index == 2 then
      local f = io.open(mark .. ".part", "w")
      f:write(os.getenv("PDLUA_NODE_NAME") or "?", "\n"); f:close()
      os.rename(mark .. ".part", mark)                 -- the spec sees the name whole
    end
    return self:pop("x")
  end }
  local h = pd.tasks_async(L, { count = 2, tubes = { { "x", 2, 1 }, { "x", 1, 2 } }, nodes = nodes })
  print("waited", h:wait(30), h:status())
  print("lost", h:error().index ~= nil, h:error().message)
elseif what == "big" then
  local ok, e = pcall(pd.tasks, Tube, { count = 9, nodes = nodes })
  print("big", ok, e)
end
]=]

describe("pd.tasks across two loopback nodes", function()
  local a, b, script
  setup(function()
    a = C.node("--cpus 2 --name ta")
    b = C.node("--cpus 2 --name tb")
    script = C.script(SETS)
  end)
  teardown(function()
    C.cleanup()
    os.remove(script)
  end)

  local function run(what, extra, env)
    return C.run(script, a.url .. " " .. b.url .. " " .. what .. " " .. (extra or "")
                 .. " --cpus 0 --nodes " .. a.url .. "," .. b.url, env, 60)
  end

  it("gives Playdoh's {9, 10} and {7, 7, 7, 7} (on both machines) and carries arrays", function()
    local out, err, rc = run("playdoh")
    assert.equals(0, rc, err)
    assert.matches("tube\t9\t10\t2\n", out)
    assert.matches("7 7 7 7 ring\tta\ttb\n", out)
    assert.matches("array\t" .. string.format("%d", 200000 * 200001 / 2 + 200000), out)
  end)

  it("fails the set with the first error when a remote node raises", function()
    local out, err, rc = run("error")
    assert.equals(0, rc, err)
    assert.matches("error\tfalse\t2\t[^\n]*remote boom\ttrue", out)
  end)

  it("fails as lost when a machine dies mid-set, and nothing hangs", function()
    local mark = os.tmpname()
    os.remove(mark)
    local p = C.spawn("env PDLUA_HEARTBEAT=" .. C.HB .. " " .. H.q(H.pdlua) .. " run " .. H.q(script)
                      .. " " .. a.url .. " " .. b.url .. " lost " .. H.q(mark) .. " --cpus 0 --nodes "
                      .. a.url .. "," .. b.url, "coordinator")
    local where = H.wait_file(mark, 30)
    assert.is_truthy(where, C.slurp(p.err))
    where = where:sub(1, -2)
    C.kill((where == "ta") and a.pid or b.pid)         -- its workers die with it
    assert.is_truthy(H.wait_until(function() return not C.alive(p.pid) end, 30))
    local out = C.slurp(p.out)
    os.remove(mark)
    assert.matches("waited\ttrue\tfailed", out)
    assert.matches("lost\ttrue\t", out)
  end)

  it("refuses a set larger than the cluster can start at once, with a clear error", function()
    local n2 = C.node("--cpus 1 --name tc")
    local out, err, rc = C.run(script, n2.url .. " " .. n2.url .. " big --cpus 0 --nodes " .. n2.url,
                               "PDLUA_TASKS_START=2", 60)
    assert.equals(0, rc, err)
    assert.matches("big\tfalse\t[^\n]*cannot start 9 nodes at once", out)
  end)
end)
