-- Failures and sharing across nodes: a node killed mid-job (kill -9), a
-- node gone silent (SIGSTOP: no FIN, no RST) noticed by heartbeats and
-- rejoining, a coordinator killed, lending changed live, two coordinators
-- on one node.  Every process started here is killed and checked gone in
-- teardown.  (Setup, secrets, discovery, TLS: nodes_cluster_spec.lua.)
local H = require "helper"
local C = require "cluster_helper"
local q = H.q
local JOB = C.JOB       -- records where each task ran, checks its results
local LEND = C.LEND     -- lend(pd, names, pids): wait until the nodes lend

describe("cluster failures and sharing", function()
  local secret
  setup(function() secret = C.secret("lab-secret-" .. math.random(1e9)) end)
  teardown(function()
    C.cleanup()
    os.remove(secret)
  end)

  it("reruns the tasks of a node killed mid-job elsewhere, and its workers die with it", function()
    local a = C.node("--cpus 2 --name ka --secret-file " .. q(secret))
    local b = C.node("--cpus 2 --name kb --secret-file " .. q(secret))
    local go = C.flag()
    -- both nodes lend before the job: kb must hold workers (and tasks)
    -- when it is killed, however late it answered the first map
    local script = C.script(LEND .. ([=[
      local pd = require "pd"
      lend(pd, { "ka", "kb" })
      local list = {}
      for i = 1, 80 do list[i] = i end
      local job = pd.map_async(function(x)
        local t = os.clock() + 0.03; while os.clock() < t do end
        return x + 1000 end, list)
      while select(1, job:progress()) < 10 do job:wait(0.05) end
      local f = io.open(%q, "w"); f:write("go"); f:close()
      local r = job:results()
      for i = 1, 80 do assert(r[i] == i + 1000, "wrong result " .. i) end
      print("OK", r.n)
    ]=]):format(go))
    local co = C.spawn("env PDLUA_HEARTBEAT=" .. C.HB .. " " .. q(H.pdlua) .. " run " .. q(script) ..
                       " --cpus 0 --secret-file " .. q(secret) .. " --nodes " .. a.url .. "," .. b.url,
                       "coordinator")
    assert.truthy(H.wait_until(function() return io.open(go) end, 30), C.slurp(co.err))
    local kb = C.workers_of("kb")
    assert.truthy(#kb > 0)
    C.kill(b.pid)                                    -- kill -9 the node mid-job
    assert.truthy(H.wait_until(function()            -- its workers die with it
      for _, pid in ipairs(kb) do if C.alive(pid) then return false end end
      return true
    end, 10))
    assert.truthy(H.wait_until(function() return not C.alive(co.pid) end, 45), C.slurp(co.err))
    C.started[co.pid] = nil
    assert.matches("OK\t80", C.slurp(co.out), C.slurp(co.err))
    assert.matches("lost", C.slurp(co.err))
    C.kill(a.pid)
  end)

  it("notices a silent node by heartbeats, reruns its tasks, and lets it rejoin", function()
    local a = C.node("--cpus 1 --name sa")
    local b = C.node("--cpus 1 --name sb")
    local go, back = C.flag(), C.flag()
    local script = C.script(([=[
      local pd = require "pd"
      local list = {}
      for i = 1, 40 do list[i] = i end
      local f1 = function(x)
        local t = os.clock() + 0.03; while os.clock() < t do end
        return x * 3 end
      local job = pd.map_async(f1, list)
      while select(1, job:progress()) < 6 do job:wait(0.05) end
      local f = io.open(%q, "w"); f:write("go"); f:close()
      local r = job:results()
      for i = 1, 40 do assert(r[i] == 3 * i) end
      print("first", r.n)
      io.stdout:flush()
      -- the stopped node is continued by the spec; it must come back
      local until_back = require("pd.core").now() + 60    -- the spec writes it; bounded all the same
      while not io.open(%q) and require("pd.core").now() < until_back do job:wait(0.05) end
      local deadline = require("pd.core").now() + 20
      local seen
      repeat
        for _, n in ipairs(pd.nodes()) do
          if n.name == "sb" and n.alive then seen = true end
        end
        if not seen then os.execute("sleep 0.1") end
      until seen or require("pd.core").now() > deadline
      assert(seen, "node did not rejoin")
      -- alive is not yet lending: sa may run all 40 before sb's workers
      -- start, so map again until sb has run some (bounded)
      local on = {}
      deadline = require("pd.core").now() + 20
      repeat
        local r2 = pd.map(function(x)
          return os.getenv("PDLUA_NODE_NAME") end, list, { chunk = 1 })
        for i = 1, 40 do on[r2[i]] = true end
      until on.sb or require("pd.core").now() > deadline
      print("second", on.sa and "sa" or "-", on.sb and "sb" or "-")
    ]=]):format(go, back))
    local co = C.spawn("env PDLUA_HEARTBEAT=" .. C.HB .. " " .. q(H.pdlua) .. " run " .. q(script) ..
                       " --cpus 0 --nodes " .. a.url .. "," .. b.url, "coordinator")
    assert.truthy(H.wait_until(function() return io.open(go) end, 30), C.slurp(co.err))
    os.execute("kill -STOP " .. b.pid)               -- silent: no FIN, no RST
    assert.truthy(H.wait_until(function() return C.slurp(co.out):match("first\t40") end, 30),
                  C.slurp(co.err))
    assert.matches("silent: no heartbeat", C.slurp(co.err))
    os.execute("kill -CONT " .. b.pid)
    local f = io.open(back, "w"); f:write("x"); f:close()
    assert.truthy(H.wait_until(function() return not C.alive(co.pid) end, 40), C.slurp(co.err))
    C.started[co.pid] = nil
    assert.matches("second\tsa\tsb", C.slurp(co.out), C.slurp(co.err))
    assert.matches("is back", C.slurp(co.err))
    C.kill(a.pid); C.kill(b.pid)
  end)


  it("stops a runaway task on a node (timeout) and replaces a worker killed there", function()
    local n = C.node("--cpus 2 --name rw")
    -- a task's clock starts when its batch is sent, and a node says a slot
    -- is there as it starts the worker: a task sent to a worker still
    -- starting pays for the start (past 1 s under ASan and load).  So both
    -- workers are warm first, and the runaway is the last task, so that
    -- nothing waits behind it for a replacement
    local script = C.script(LEND .. [=[
      local pd = require "pd"
      lend(pd, { "rw" }, 2)
      local r = pd.map(function(x)
        if x == 6 then while true do end end        -- runaway: only the timeout stops it
        return x end, {1, 2, 3, 4, 5, 6}, { timeout = 1, errors = "collect" })
      print(r[1], r[5], pd.iserror(r[6]) and r[6].message or "no error")
    ]=])
    local out, err, rc = C.run(script, "--cpus 0 --nodes " .. n.url)
    assert.equals(0, rc, err)
    assert.matches("^1\t5\ttask 6 timed out after 1 s[^\t\n]*\n$", out)
    -- nothing is left spinning on the node afterwards
    assert.truthy(H.wait_until(function() return #C.workers_of("rw") == 0 end, 10))
    -- a worker killed on the node mid-job: its task runs again
    local go = C.flag()
    script = C.script(([=[
      local pd = require "pd"
      local list = {}
      for i = 1, 40 do list[i] = i end
      local job = pd.map_async(function(x)
        local t = os.clock() + 0.05; while os.clock() < t do end
        return x * 5 end, list, { chunk = 1 })
      while select(1, job:progress()) < 4 do job:wait(0.05) end
      local f = io.open(%q, "w"); f:write("go"); f:close()
      local r = job:results()
      for i = 1, 40 do assert(r[i] == 5 * i) end
      print("OK", r.n)
    ]=]):format(go))
    local co = C.spawn("env PDLUA_HEARTBEAT=" .. C.HB .. " " .. q(H.pdlua) .. " run " .. q(script) ..
                       " --cpus 0 --nodes " .. n.url, "coordinator")
    assert.truthy(H.wait_until(function() return io.open(go) end, 30), C.slurp(co.err))
    local victims = C.workers_of("rw")
    assert.truthy(#victims > 0)
    os.execute("kill -9 " .. victims[1])
    assert.truthy(H.wait_until(function() return not C.alive(co.pid) end, 40), C.slurp(co.err))
    C.started[co.pid] = nil
    assert.matches("OK\t40", C.slurp(co.out), C.slurp(co.err))
    C.kill(n.pid)
  end)
  it("leaves a node clean when its coordinator is killed, and keeps serving", function()
    local n = C.node("--cpus 2 --name dc")
    local script = C.script([=[
      local pd = require "pd"
      pd.map(function() while true do end end, {1, 2, 3, 4})
    ]=])
    local co = C.spawn("env PDLUA_HEARTBEAT=" .. C.HB .. " " .. q(H.pdlua) .. " run " .. q(script) ..
                       " --cpus 0 --nodes " .. n.url, "coordinator")
    assert.truthy(H.wait_until(function() return #C.workers_of("dc") == 2 end, 20))
    C.kill(co.pid)
    assert.truthy(H.wait_until(function() return #C.workers_of("dc") == 0 end, 10))
    assert.truthy(H.wait_until(function() return C.slurp(n.err):match("left") end, 10))
    local out, err, rc = C.run(C.script(JOB), "6 0 --cpus 0 --nodes " .. n.url)
    assert.equals(0, rc, err)
    assert.matches("^OK 6 dc=6", out)
    C.kill(n.pid)
  end)

  it("lends less or more while running, without dropping work", function()
    local n = C.node("--cpus 3 --name lend")
    local go, fin = C.flag(), C.flag()
    -- the last two tasks wait for the spec (fin, bounded): the job still
    -- wants two workers when the node lends two again, however fast it ran
    local script = C.script(([=[
      local pd = require "pd"
      local list = {}
      for i = 1, 60 do list[i] = i end
      local job = pd.map_async(function(x)
        local t = os.clock() + 0.05; while os.clock() < t do end
        if x > 58 then
          local core = require "pd.core"
          local until_fin = core.now() + 30
          while not io.open(%q) and core.now() < until_fin do os.execute("sleep 0.05") end
        end
        return -x end, list, { chunk = 1 })
      while select(1, job:progress()) < 3 do job:wait(0.05) end
      local f = io.open(%q, "w"); f:write("go"); f:close()
      local r = job:results()
      for i = 1, 60 do assert(r[i] == -i) end
      print("OK", r.n)
    ]=]):format(fin, go))
    local co = C.spawn("env PDLUA_HEARTBEAT=" .. C.HB .. " " .. q(H.pdlua) .. " run " .. q(script) ..
                       " --cpus 0 --nodes " .. n.url, "coordinator")
    assert.truthy(H.wait_until(function() return io.open(go) end, 30), C.slurp(co.err))
    -- the node starts all three as the map asks; a worker counts once it
    -- has exec'd (its environment names the node)
    local w
    assert.truthy(H.wait_until(function()
      w = C.workers_of("lend")
      return #w == 3
    end, 15), C.describe(w or {}))
    local out, err, rc = H.pdlua_run("ctl --node " .. n.url .. " set --cpus 1")
    assert.equals(0, rc, err)
    assert.matches("cpus=1", out)
    -- running batches finish; then only one worker is left
    assert.truthy(H.wait_until(function() return #C.workers_of("lend") == 1 end, 15))
    -- what it lends, and its one worker busy (between two batches it may
    -- read 0 for a moment: ask until it is caught running)
    assert.truthy(H.wait_until(function()
      return H.pdlua_run("nodes --nodes " .. n.url):match("name=lend cpus=1 gpus=0 busy=1 coordinators=1")
    end, 10))
    H.pdlua_run("ctl --node " .. n.url .. " set --cpus 2")
    assert.truthy(H.wait_until(function() return #C.workers_of("lend") == 2 end, 15))
    local f = io.open(fin, "w"); f:write("fin"); f:close()
    assert.truthy(H.wait_until(function() return not C.alive(co.pid) end, 40), C.slurp(co.err))
    C.started[co.pid] = nil
    assert.matches("OK\t60", C.slurp(co.out), C.slurp(co.err))
    C.kill(n.pid)
  end)

  it("shares one node fairly between two coordinators", function()
    local n = C.node("--cpus 2 --name fair")
    local bran = C.flag()
    -- arg[1]: A or B.  A's last task waits (bounded) until one of B's has
    -- run, so A still has work when B comes, however late B starts; B's
    -- task takes its time before it says so.  A node that gave B nothing
    -- while A held both CPUs fails: A's last ends after the wait, B's first
    -- after A's last.
    local script = C.script(([=[
      local pd = require "pd"
      local core = require "pd.core"
      local who = arg[1]
      local list = {}
      for i = 1, 60 do list[i] = i end
      local job = pd.map_async(function(x)
        local t = os.clock() + 0.05; while os.clock() < t do end
        local core = require "pd.core"
        local now = core.now()
        if who == "B" then io.open(%q, "w"):close() end
        if who == "A" and x == 60 then
          local until_b = core.now() + 30
          while not io.open(%q) and core.now() < until_b do os.execute("sleep 0.05") end
          now = core.now()
        end
        return now end, list, { chunk = 1 })
      local r = job:results()
      local first, last = math.huge, 0
      for i = 1, 60 do first = math.min(first, r[i]); last = math.max(last, r[i]) end
      print(string.format("%%.6f %%.6f", first, last))
    ]=]):format(bran, bran))
    local words = " --cpus 0 --nodes " .. n.url
    local a = C.spawn("env PDLUA_HEARTBEAT=" .. C.HB .. " " .. q(H.pdlua) .. " run " .. q(script) .. " A" .. words, "A")
    assert.truthy(H.wait_until(function() return #C.workers_of("fair") == 2 end, 20))
    local b = C.spawn("env PDLUA_HEARTBEAT=" .. C.HB .. " " .. q(H.pdlua) .. " run " .. q(script) .. " B" .. words, "B")
    assert.truthy(H.wait_until(function() return not C.alive(a.pid) and not C.alive(b.pid) end, 50))
    C.started[a.pid], C.started[b.pid] = nil, nil
    local a1, aN = C.slurp(a.out):match("([%d.]+) ([%d.]+)")
    local b1, bN = C.slurp(b.out):match("([%d.]+) ([%d.]+)")
    assert.truthy(a1 and b1, C.slurp(a.err) .. C.slurp(b.err))
    -- B got a slot while A still had work: its first task ended before A's last
    assert.is_true(tonumber(b1) < tonumber(aN))
    C.kill(n.pid)
  end)
end)
