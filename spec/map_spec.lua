-- pd.map on local workers (docs/map.md): results, errors,
-- async jobs, cancel, faults injected (kill -9, runaway loops, unbounded
-- allocation, os.exit), reproducible randomness, progress, no orphans.
-- Behaviour only: speed is measured in bench/map, not asserted here.
local H = require "helper"
local pd = require "pd"
local map = require "pd.map"
local session = require "pd.session"
local cmap = require "pd.core.map"
local core = require "pd.core"
local q = H.q

local function alive_count(pids)
  local n = 0
  for _, pid in ipairs(pids) do if cmap.alive(pid) then n = n + 1 end end
  return n
end

-- A task body that spins for `s` seconds of wall time (os.clock is CPU
-- time of the worker, good enough for a busy loop).
local function busy(s)
  local t = os.clock()
  while os.clock() - t < s do end
end

describe("pd.map", function()
  setup(function() pd.init { cpus = 2 } end)
  teardown(function()
    local pids = session.pids()
    pd.shutdown()
    assert.equals(0, alive_count(pids))       -- tests end clean
  end)

  it("returns results in list order with n", function()
    local r = pd.map(function(x) return x * x end, { 1, 2, 3, 4 })
    assert.same({ 1, 4, 9, 16, n = 4 }, r)
    local e = pd.map(function(x) return x end, {})
    assert.equals(0, e.n)
  end)

  it("keeps integer and float subtypes, strings, booleans and tables", function()
    local r = pd.map(function(x) return x end, { 1, 2.5, "a\0b", true, { k = { 1, 2 } } })
    assert.same({ 1, 2.5, "a\0b", true, { k = { 1, 2 } }, n = 5 }, r)
    if math.type then assert.equals("integer", math.type(r[1])) end
  end)

  it("carries upvalues and library functions by name, and unpacks arguments", function()
    local k, sin = 10, math.sin
    local function helper(x) return x + k end
    local r = pd.map(function(a, b) return helper(a) + b + sin(0) end, { { 1, 2 }, { 3, 4 } },
                     { unpack = true })
    assert.same({ 13, 17, n = 2 }, r)
  end)

  it("sends a table upvalue as it is at each map, and a pinned function as it was first", function()
    local t = { v = 1 }
    local f = function(x) return x + t.v end
    assert.same({ 2, n = 1 }, pd.map(f, { 1 }))
    t.v = 5
    assert.same({ 6, n = 1 }, pd.map(f, { 1 }))     -- packed again: the table may have changed
    local g = require("pd.pack").pin(function(x) return x + t.v end)
    assert.same({ 6, n = 1 }, pd.map(g, { 1 }))
    t.v = 7                                         -- a pin promises this does not happen
    assert.same({ 6, n = 1 }, pd.map(g, { 1 }))     -- packed once: the first value travels
  end)

  it("packs through pd.pack and keeps its session in pd.session", function()
    local pack, session = require "pd.pack", require "pd.session"
    assert.same({ cpus = 2, cluster = false }, session.state())
    assert.equals(session.settings(), session.settings())   -- read once, until pd.init
    assert.equals(2, session.settings().cpus)
    local k = 3
    local f = function(x) return x * k end
    local blob = pack.pack(f, nil, false)
    assert.equals(blob, pack.pack(f, nil, false))           -- the blob cache
    local g, shared = pack.unpack(blob)
    assert.equals(12, g(4))
    assert.is_nil(shared)
    -- encode_in_G: an _ENV that is not _G travels as _G and is put back,
    -- also when encoding raises (Lua 5.2 and up: LuaJIT has no _ENV)
    local env = setmetatable({}, { __index = _G })
    local h = load("return function() return x end", "h", "t", env)()
    if debug.getupvalue(h, 1) == "_ENV" then
      local msg = pack.encode_in_G({ f = h }, h, false)
      assert.equals(env, select(2, debug.getupvalue(h, 1)))
      assert.is_string(msg)
      assert.has_error(function() pack.encode_in_G({ h, coroutine.create(h) }, h, false) end)
      assert.equals(env, select(2, debug.getupvalue(h, 1)))
    end
  end)

  it("shares read-only values with every task as pd.shared", function()
    local r = pd.map(function(i) return require("pd").shared.t[i] end, { 1, 2, 3 },
                     { shared = { t = { "a", "b", "c" } } })
    assert.same({ "a", "b", "c", n = 3 }, r)
  end)

  it("maps a pd.array: one element (1-D) or one row (2-D) per task", function()
    local v = pd.map(function(x) return x * 2 end, pd.array { 1, 2, 3 })
    assert.same({ 2, 4, 6, n = 3 }, v)
    local m = pd.map(function(row) return row:sum() end, pd.array { { 1, 2 }, { 3, 4 }, { 5, 6 } })
    assert.same({ 3, 7, 11, n = 3 }, m)
  end)

  it("maps a large list in batches: far fewer messages than tasks", function()
    local xs = {}
    for i = 1, 20000 do xs[i] = i end
    local pool = session.pools().default
    local before = pool and pool:stats().frames_out or 0
    local r = pd.map(function(x) return x + 1 end, xs)
    assert.equals(20000, r.n)
    assert.equals(20001, r[20000])
    local sent = session.pools().default:stats().frames_out - before
    assert.is_true(sent < 2000, "frames sent: " .. sent)
    -- chunk = 1 is honoured: one task per message
    before = session.pools().default:stats().frames_out
    r = pd.map(function(x) return x end, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, { chunk = 1 })
    assert.equals(10, r.n)
    assert.is_true(session.pools().default:stats().frames_out - before >= 10)
  end)

  it("writes lone scalars byte for byte as the codec does, and reads them back", function()
    local vals = { 0, 1, -1, 63, 64, -65, 300, math.maxinteger or 2^53, math.mininteger or -2^53,
                   0.5, -0.0, 1/0, 1e300, "", "x", string.rep("y", 200), true, false }
    for _, v in ipairs(vals) do
      local s = cmap.encode(v)
      assert.equals(cmap.codec_encode(v), s)
      assert.equals(v, cmap.decode(s))
      assert.equals(v, require("pd.codec").decode(s))
    end
    assert.is_nil(cmap.decode(cmap.encode(nil)))
    assert.has_error(function() cmap.decode("\1\3") end)       -- truncated
  end)

  it("rejects bad arguments and unsendable elements", function()
    assert.has_error(function() pd.map(42, {}) end)
    assert.has_error(function() pd.map(function() end, {}, { bogus = 1 }) end)
    local ok, err = pcall(pd.map, function(x) return x end, { 1, coroutine.create(print) })
    assert.is_false(ok)
    assert.matches("element 2", tostring(err))
  end)

  describe("errors", function()
    it("raise an error object with the worker's traceback and the task index", function()
      local ok, e = pcall(pd.map, function(x)
        if x == 3 then error("boom") end
        return x
      end, { 1, 2, 3, 4 })
      assert.is_false(ok)
      assert.is_true(pd.iserror(e))
      assert.equals(3, e.task)
      assert.matches("boom", e.message)
      assert.matches("stack traceback", e.traceback)
      assert.matches("^local:%d+", e.node)
      assert.matches("task 3 failed", tostring(e))
    end)

    it("are collected in their slots with errors = 'collect'", function()
      local r = pd.map(function(x)
        if x % 2 == 0 then error({ code = x }) end
        return x
      end, { 1, 2, 3, 4 }, { errors = "collect" })
      assert.equals(1, r[1])
      assert.is_true(pd.iserror(r[2]))
      assert.equals(2, r[2].task)
      assert.equals(3, r[3])
      assert.is_true(pd.iserror(r[4]))
    end)

    it("are not retried (a Lua error is not a lost worker)", function()
      local r = pd.map(function() error("once") end, { 1 }, { errors = "collect", retries = 5 })
      assert.matches("once", r[1].message)
    end)
  end)

  describe("jobs", function()
    it("have an id, a status, progress, wait with timeout, results", function()
      local job = pd.map_async(function(x)
        local t = os.clock()
        while os.clock() - t < 0.3 do end
        return x
      end, { 1, 2 })
      assert.is_number(job.id)
      assert.equals(job, pd.job(job.id))
      local found = false
      for _, j in ipairs(pd.jobs()) do found = found or j == job end
      assert.is_true(found)
      local ok, why = job:wait(0.01)
      assert.is_nil(ok)
      assert.equals("timeout", why)
      assert.truthy(({ queued = 1, running = 1 })[job:status()])
      assert.is_true(job:wait(30))
      assert.equals("done", job:status())
      local d, t, f = job:progress()
      assert.same({ 2, 2, 0 }, { d, t, f })
      assert.same({ 1, 2, n = 2 }, job:results())
      job:release()
      assert.is_nil(pd.job(job.id))
    end)

    it("advance while the script runs its own Lua code", function()
      local xs = {}
      for i = 1, 60 do xs[i] = i end
      local job = pd.map_async(function(x)
        local t = os.clock()
        while os.clock() - t < 0.005 do end
        return x
      end, xs, { chunk = 1 })
      -- Lua 5.4: a count hook pumps while this loop runs (the raw C
      -- progress below does not pump); LuaJIT compiles the loop and runs no
      -- hooks, so there job:progress() (which gives the scheduler a turn)
      local raw = not pd.vm:match("LuaJIT")
      local deadline, x = core.now() + 30, 0
      local done
      repeat
        for i = 1, 1e5 do x = x + i end
        if raw then done = job._pool:progress(job.id) else done = job:progress() end
      until done == 60 or core.now() > deadline
      assert.equals(60, done)
      assert.same(xs, (function() local r = job:results(); r.n = nil; return r end)())
    end)

    it("yield every result once, in completion order, with each()", function()
      local job = pd.map_async(function(x)
        local t = os.clock()
        while os.clock() - t < (x == 1 and 0.3 or 0) do end
        return x * 10
      end, { 1, 2, 3, 4, 5, 6 }, { chunk = 1 })
      local seen, order = {}, {}
      for i, v in job:each() do
        assert.equals(i * 10, v)
        assert.is_nil(seen[i])
        seen[i] = true
        order[#order + 1] = i
      end
      assert.equals(6, #order)
      assert.is_true(order[1] ~= 1)            -- the slow first task is not first back
    end)

    it("cancel stops long-running tasks promptly and replaces their workers", function()
      local job = pd.map_async(function() while true do end end, { 1, 2, 3, 4 })
      assert.truthy(H.wait_until(function()
        job._pool:pump(0)
        return job:status() == "running" and #session.pids() > 0
      end, 10))
      local pids = session.pids()
      local t0 = core.now()
      job:cancel()
      assert.equals("cancelled", job:status())
      assert.is_true(core.now() - t0 < 2)
      assert.truthy(H.wait_until(function() return alive_count(pids) == 0 end, 5))
      assert.has_error(function() job:results() end)
      -- the pool still works
      assert.same({ 2, n = 1 }, pd.map(function(x) return x + 1 end, { 1 }))
    end)
  end)

  describe("faults", function()
    it("a worker killed with -9 mid-task costs only its tasks, which run again", function()
      local job = pd.map_async(function(x)
        local t = os.clock()
        while os.clock() - t < 0.05 do end
        return x
      end, (function() local t = {} for i = 1, 40 do t[i] = i end return t end)(),
      { chunk = 1 })
      local victim
      assert.truthy(H.wait_until(function()
        job._pool:pump(0.02)
        local d = job:progress()
        if d >= 2 then victim = job._pool:pids()[1] end
        return victim
      end, 20))
      os.execute("kill -9 " .. victim)
      assert.is_true(job:wait(60))
      local r = job:results()
      for i = 1, 40 do assert.equals(i, r[i]) end
      assert.is_false(cmap.alive(victim))
      assert.is_true(job._pool:stats().lost >= 1)
    end)

    it("a task that never returns times out; the others finish", function()
      local t0 = core.now()
      local r = pd.map(function(x)
        if x == 2 then while true do end end
        return x
      end, { 1, 2, 3 }, { timeout = 0.5, errors = "collect" })
      assert.equals(1, r[1])
      assert.is_true(pd.iserror(r[2]))
      assert.matches("timed out", r[2].message)
      assert.equals(3, r[3])
      assert.is_true(core.now() - t0 < 20)
    end)

    it("a task that allocates without bound fails with out of memory, naming the limit", function()
      local r = pd.map(function(x)
        if x == 1 then
          local t = {}
          for i = 1, 1e9 do t[i] = string.rep("x", 64) .. i end
        end
        return x
      end, { 1, 2 }, { memory = 64, errors = "collect" })
      assert.is_true(pd.iserror(r[1]))
      assert.matches("out of memory", r[1].message)
      assert.matches("64 MiB", r[1].message)
      assert.equals(2, r[2])
      -- in the middle of a batch: the batch mates are answered, not lost
      local r3 = pd.map(function(x)
        if x == 5 then
          local t = {}
          for i = 1, 1e9 do t[i] = string.rep("x", 64) .. i end
        end
        return x
      end, { 1, 2, 3, 4, 5, 6, 7, 8 }, { memory = 64, errors = "collect", chunk = 8, retries = 0 })
      for i = 1, 8 do
        if i == 5 then assert.matches("out of memory", r3[5].message)
        else assert.equals(i, r3[i]) end
      end
      -- the replaced worker serves the next map
      assert.same({ 5, n = 1 }, pd.map(function(x) return x end, { 5 }, { memory = 64 }))
    end)

    it("a worker that segfaults costs its task only; a new worker takes its place", function()
      local r = pd.map(function(x)
        if x == 2 then
          os.execute("kill -SEGV " .. require("pd.core.map").getpid())
        end
        return x
      end, { 1, 2, 3 }, { errors = "collect", retries = 0 })
      assert.equals(1, r[1])
      assert.matches("lost while running task 2", r[2].message)
      if not H.build:match("asan") then            -- ASan turns SIGSEGV into exit 1
        assert.matches("signal 11", r[2].message)
      end
      assert.equals(3, r[3])
      assert.same({ 7, n = 1 }, pd.map(function(x) return x end, { 7 }))
    end)

    it("a worker that exits is retried, then reported as lost", function()
      local marker = os.tmpname()
      os.remove(marker)
      local r = pd.map(function(x)
        if x == 1 then
          local f = io.open(marker, "r")
          if not f then
            f = io.open(marker, "w"); f:write("x"); f:close()
            os.exit(3)                                 -- first attempt only
          end
          f:close()
        end
        return x
      end, { 1, 2 })
      assert.same({ 1, 2, n = 2 }, r)
      os.remove(marker)
      local r2 = pd.map(function(x) if x == 2 then os.exit(4) end return x end, { 1, 2, 3 },
                        { errors = "collect", retries = 1 })
      assert.equals(1, r2[1])
      assert.matches("lost", r2[2].message)
      assert.matches("status 4", r2[2].message)
      assert.equals(3, r2[3])
    end)
  end)

  it("runs two long tasks on two workers side by side", function()
    local r = pd.map(function()
      local t = os.clock()
      while os.clock() - t < 0.2 do end
      return require("pd.core.map").getpid()
    end, { 1, 2 })
    assert.are_not.equal(r[1], r[2])
  end)

  it("gives a slow worker fewer tasks (dynamic load balancing)", function()
    pd.map(function(x) return x end, { 1, 2, 3, 4 })   -- both workers up
    local pids = session.pools().default:pids()
    assert.equals(2, #pids)
    local slow = pids[1]
    local xs = {}
    for i = 1, 60 do xs[i] = i end
    local r = pd.map(function()
      local me = require("pd.core.map").getpid()
      local t = os.clock()
      while os.clock() - t < (me == slow and 0.02 or 0.002) do end
      return me
    end, xs, { chunk = 1 })
    local count = {}
    for i = 1, r.n do count[r[i]] = (count[r[i]] or 0) + 1 end
    local fast = pids[2]
    assert.is_true((count[slow] or 0) < (count[fast] or 0),
                   ("slow %d fast %d"):format(count[slow] or 0, count[fast] or 0))
  end)

  it("gives each task a random stream fixed by the seed and its index", function()
    local function f(x)
      local g = require("pd").rng()
      return { g:uniform(), g:normal(), g:integers(1, 100), require("pd").rng() == g }
    end
    local xs = {}
    for i = 1, 50 do xs[i] = i end
    local a = pd.map(f, xs, { seed = 42, cpus = 1, chunk = 3 })
    local b = pd.map(f, xs, { seed = 42, cpus = 2, chunk = 1 })
    local c = pd.map(f, xs, { seed = 43 })
    assert.same(a, b)
    assert.is_true(a[1][4])
    assert.are_not.same(a[1][1], a[2][1])
    assert.are_not.same(a[1][1], c[1][1])
    local g = pd.random.new(7)
    local u = g:uniform(2, 3)
    assert.is_true(u >= 2 and u < 3)
  end)

  it("lists the local node", function()
    local n = pd.nodes()
    assert.equals(1, #n)
    assert.equals("local", n[1].name)
    assert.is_true(n[1].alive)
  end)
end)

describe("pdlua run with pd.map", function()
  local function pids_of(out)
    local t = {}
    for p in out:gmatch("pid (%d+)") do t[#t + 1] = tonumber(p) end
    return t
  end

  it("uses --cpus workers and stops them when the script ends", function()
    local s = H.tmpfile([[
      local pd = require "pd"
      local r = pd.map(function(x) return x end, {1, 2, 3, 4, 5, 6, 7, 8}, {chunk = 1})
      for _, p in ipairs(require("pd.session").pids()) do print("pid " .. p) end
      print("n " .. r.n)
    ]], ".lua")
    local out, err, rc = H.pdlua_run("run --cpus 3 " .. q(s))
    assert.equals(0, rc, err)
    assert.matches("n 8", out)
    local pids = pids_of(out)
    assert.is_true(#pids >= 1 and #pids <= 3)
    assert.equals(0, alive_count(pids))        -- lua_close reaped them
    os.remove(s)
  end)

  it("leaves no orphans when the coordinator is killed with -9", function()
    local pidfile = os.tmpname()
    local s = H.tmpfile(([[
      local pd = require "pd"
      local job = pd.map_async(function() while true do end end, {1, 2})
      while #require("pd.session").pids() < 2 do job._pool:pump(0.01) end
      local f = io.open(%q .. ".part", "w")
      f:write("coord ", require("pd.core.map").getpid(), "\n")
      for _, p in ipairs(require("pd.session").pids()) do f:write("pid ", p, "\n") end
      f:close()
      os.rename(%q .. ".part", %q)                   -- the spec sees the list whole
      job:wait()
    ]]):format(pidfile, pidfile, pidfile), ".lua")
    os.execute(q(H.pdlua) .. " run --cpus 2 " .. q(s) .. " >/dev/null 2>&1 &")
    local text = H.wait_file(pidfile, 20, function(t) return #pids_of(t) == 2 end)
    assert.truthy(text)
    local coord = tonumber(text:match("coord (%d+)"))
    local pids = pids_of(text)
    assert.equals(2, alive_count(pids))
    os.execute("kill -9 " .. coord)
    assert.truthy(H.wait_until(function() return alive_count(pids) == 0 end, 10))
    os.remove(pidfile)
    os.remove(s)
  end)

  it("prints JSON events with --json and nothing with --no-progress", function()
    local s = H.tmpfile([[
      local pd = require "pd"
      local r = pd.map(function(x) return x end, {1, 2, 3})
      print(r.n)
    ]], ".lua")
    local out, err, rc = H.pdlua_run("run --json " .. q(s))
    assert.equals(0, rc, err)
    assert.equals("3\n", out)
    assert.matches('{"event":"job_started","job":%d+,"total":3', err)
    assert.matches('{"event":"job_finished","job":%d+,"status":"done","done":3,"total":3', err)
    out, err, rc = H.pdlua_run("run --no-progress " .. q(s))
    assert.equals(0, rc)
    assert.equals("", err)
    out, err, rc = H.pdlua_run("run " .. q(s))      -- stderr is not a terminal here
    assert.equals(0, rc)
    assert.equals("", err)
    os.remove(s)
  end)

  it("runs the examples; pi's estimate does not depend on --cpus", function()
    local pi = H.source .. "/examples/pi.lua"
    local a, e1, rc1 = H.pdlua_run("run " .. q(pi) .. " 200000 --cpus 1 --seed 3")
    local b, e2, rc2 = H.pdlua_run("run " .. q(pi) .. " 200000 --cpus 2 --seed 3")
    assert.equals(0, rc1, e1)
    assert.equals(0, rc2, e2)
    local ea, eb = a:match("pi ~ (%S+)"), b:match("pi ~ (%S+)")
    assert.is_truthy(ea)
    assert.equals(ea, eb)
    assert.is_true(math.abs(tonumber(ea) - math.pi) < 0.05)
    local out, err, rc = H.pdlua_run("run " .. q(H.source .. "/examples/sweep.lua") .. " 4 --cpus 2")
    assert.equals(0, rc, err)
    assert.matches("16 runs of", out)
    assert.matches("largest predator peak", out)
  end)

  it("draws a progress bar when asked (done/total, rate, ETA)", function()
    local s = H.tmpfile([[
      local pd = require "pd"
      pd.map(function(x) local t = os.clock() while os.clock() - t < 0.1 do end return x end,
             {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {progress = true, chunk = 1})
    ]], ".lua")
    local _, err, rc = H.pdlua_run("run --cpus 2 " .. q(s))
    assert.equals(0, rc, err)
    assert.matches("12/12", err)
    assert.matches("/s", err)
    os.remove(s)
  end)
end)
