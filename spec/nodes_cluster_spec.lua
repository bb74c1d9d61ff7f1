-- Many machines on one: `pdlua serve` nodes on loopback ports, jobs spread
-- over them, secrets, lending changed live, two coordinators, discovery,
-- TLS, and failures injected (kill -9 a node, stop one so it goes silent,
-- kill a coordinator).  docs/operations.md tells what each failure does.
-- Every process started here is killed and checked gone in teardown.
local H = require "helper"
local C = require "cluster_helper"
local q = H.q

-- A job that records where each task ran (PDLUA_NODE_NAME is set in a
-- node's workers) and checks its results itself.
local JOB = [=[
local pd = require "pd"
local n = tonumber(arg[1] or "40")
local spin = tonumber(arg[2] or "0.02")
local list = {}
for i = 1, n do list[i] = i end
local r = pd.map(function(x)
  local t = os.clock() + spin
  while os.clock() < t do end
  return { x * x, os.getenv("PDLUA_NODE_NAME") or "local" }
end, list)
local where = {}
for i = 1, n do
  assert(r[i][1] == i * i, "wrong result at " .. i)
  where[r[i][2]] = (where[r[i][2]] or 0) + 1
end
local names = {}
for k, v in pairs(where) do names[#names + 1] = k .. "=" .. v end
table.sort(names)
print("OK " .. r.n .. " " .. table.concat(names, " "))
]=]

describe("pdlua serve and --nodes", function()
  local secret, other
  setup(function()
    secret = C.secret("lab-secret-" .. math.random(1e9))
    other = C.secret("another-secret")
  end)
  teardown(function()
    C.cleanup()
    os.remove(secret); os.remove(other)
  end)

  it("spreads a map over two nodes and the local CPUs, results in order", function()
    local a = C.node("--cpus 2 --name la")
    local b = C.node("--cpus 2 --name lb")
    local out, err, rc = C.run(C.script(JOB), "40 0.02 --cpus 1 --nodes " .. a.url .. "," .. b.url)
    assert.equals(0, rc, err)
    assert.matches("^OK 40 ", out)
    assert.matches("la=%d+", out)
    assert.matches("lb=%d+", out)
    assert.matches("local=%d+", out)
    C.kill(a.pid); C.kill(b.pid)
  end)

  it("ships the script's own modules to nodes that do not have them", function()
    local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -p " .. q(dir))
    local f = assert(io.open(dir .. "/shapes.lua", "wb"))
    f:write("return { area = function(r) return 3 * r * r end }\n"); f:close()
    local script = C.script([=[
      local pd = require "pd"
      local shapes = require "shapes"
      local r = pd.map(function(x) return require("shapes").area(x) end, {1, 2, 3})
      print(r[1], r[2], r[3])
    ]=], dir)
    local n = C.node("--cpus 1 --name ship", nil, "/")        -- cwd / : no shapes.lua there
    local out, err, rc = C.run(script, "--cpus 0 --nodes " .. n.url, "-C " .. q(dir))
    assert.equals(0, rc, err)
    assert.equals("3\t12\t27\n", out)
    C.kill(n.pid)
    os.execute("rm -rf " .. q(dir))
  end)

  it("refuses to listen beyond loopback without a secret", function()
    local out, err, rc = H.pdlua_run("serve --listen tcp://0.0.0.0:0 --cpus 1")
    assert.not_equals(0, rc)
    assert.matches("refusing to listen on tcp://0.0.0.0:0 without a secret", err)
  end)

  it("refuses a secret file others can read", function()
    local loose = C.secret("x", "644")
    local _, err, rc = H.pdlua_run("serve --secret-file " .. q(loose))
    assert.not_equals(0, rc)
    assert.matches("chmod 600", err)
    os.remove(loose)
  end)

  it("authenticates both ways; a wrong or missing secret fails at once and runs nothing",
     function()
    local n = C.node("--cpus 1 --name sec --secret-file " .. q(secret))
    local marker = os.tmpname(); os.remove(marker)
    local script = C.script(([=[
      local pd = require "pd"
      pd.map(function() local f = io.open(%q, "w"); f:write("ran"); f:close() end, {1})
      print("finished")
    ]=]):format(marker))
    -- right secret: runs
    local out, err, rc = C.run(C.script(JOB), "8 0 --cpus 0 --secret-file " .. q(secret) ..
                               " --nodes " .. n.url)
    assert.equals(0, rc, err)
    assert.matches("^OK 8 sec=8", out)
    -- wrong secret: the coordinator says so, the node says so, nothing ran
    out, err, rc = C.run(script, "--cpus 0 --secret-file " .. q(other) .. " --nodes " .. n.url, nil, 20)
    assert.not_equals(0, rc)
    assert.matches("authentication failed: wrong secret", err)
    assert.is_nil(io.open(marker))
    assert.truthy(H.wait_until(function()
      return C.slurp(n.err):match("authentication failed; the peer says")
    end, 10))
    -- no secret at all against a node that wants one
    out, err, rc = C.run(script, "--cpus 0 --nodes " .. n.url, nil, 20)
    assert.not_equals(0, rc)
    assert.matches("requires the shared secret", err)
    assert.is_nil(io.open(marker))
    assert.truthy(H.wait_until(function()
      return C.slurp(n.err):match("refused [%d.:]+: this node requires the shared secret")
    end, 10))
    -- a secret against a node without one
    local open = C.node("--cpus 1 --name open")
    out, err, rc = C.run(script, "--cpus 0 --secret-file " .. q(secret) .. " --nodes " .. open.url, nil, 20)
    assert.not_equals(0, rc)
    assert.matches("has no secret", err)
    assert.is_nil(io.open(marker))
    -- pdlua nodes with the wrong secret
    out, err, rc = H.pdlua_run("nodes --nodes " .. n.url .. " --secret-file " .. q(other))
    assert.not_equals(0, rc)
    assert.matches("wrong secret", out .. err)
    C.kill(n.pid); C.kill(open.pid)
  end)

  it("reruns the tasks of a node killed mid-job elsewhere, and its workers die with it", function()
    local a = C.node("--cpus 2 --name ka --secret-file " .. q(secret))
    local b = C.node("--cpus 2 --name kb --secret-file " .. q(secret))
    local go = os.tmpname(); os.remove(go)
    local script = C.script(([=[
      local pd = require "pd"
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
    assert.truthy(#C.workers_of("kb") > 0)
    C.kill(b.pid)                                    -- kill -9 the node mid-job
    assert.truthy(H.wait_until(function() return #C.workers_of("kb") == 0 end, 10))
    assert.truthy(H.wait_until(function() return not C.alive(co.pid) end, 45), C.slurp(co.err))
    C.started[co.pid] = nil
    assert.matches("OK\t80", C.slurp(co.out), C.slurp(co.err))
    assert.matches("lost", C.slurp(co.err))
    C.kill(a.pid)
  end)

  it("notices a silent node by heartbeats, reruns its tasks, and lets it rejoin", function()
    local a = C.node("--cpus 1 --name sa")
    local b = C.node("--cpus 1 --name sb")
    local go, back = os.tmpname(), os.tmpname()
    os.remove(go); os.remove(back)
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
      while not io.open(%q) do job:wait(0.05) end
      local deadline = require("pd.core").now() + 20
      local seen
      repeat
        for _, n in ipairs(pd.nodes()) do
          if n.name == "sb" and n.alive then seen = true end
        end
        if not seen then os.execute("sleep 0.1") end
      until seen or require("pd.core").now() > deadline
      assert(seen, "node did not rejoin")
      local r2 = pd.map(function(x)
        return os.getenv("PDLUA_NODE_NAME") end, list, { chunk = 1 })
      local on = {}
      for i = 1, 40 do on[r2[i]] = true end
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
    os.remove(go); os.remove(back)
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
    local go = os.tmpname(); os.remove(go)
    local script = C.script(([=[
      local pd = require "pd"
      local list = {}
      for i = 1, 60 do list[i] = i end
      local job = pd.map_async(function(x)
        local t = os.clock() + 0.05; while os.clock() < t do end
        return -x end, list, { chunk = 1 })
      while select(1, job:progress()) < 3 do job:wait(0.05) end
      local f = io.open(%q, "w"); f:write("go"); f:close()
      local r = job:results()
      for i = 1, 60 do assert(r[i] == -i) end
      print("OK", r.n)
    ]=]):format(go))
    local co = C.spawn("env PDLUA_HEARTBEAT=" .. C.HB .. " " .. q(H.pdlua) .. " run " .. q(script) ..
                       " --cpus 0 --nodes " .. n.url, "coordinator")
    assert.truthy(H.wait_until(function() return io.open(go) end, 30), C.slurp(co.err))
    assert.equals(3, #C.workers_of("lend"))
    local out, err, rc = H.pdlua_run("ctl --node " .. n.url .. " set --cpus 1")
    assert.equals(0, rc, err)
    assert.matches("cpus=1", out)
    -- running batches finish; then only one worker is left
    assert.truthy(H.wait_until(function() return #C.workers_of("lend") == 1 end, 15))
    out = H.pdlua_run("nodes --nodes " .. n.url)
    assert.matches("name=lend cpus=1 gpus=0 busy=1 coordinators=1", out)
    H.pdlua_run("ctl --node " .. n.url .. " set --cpus 2")
    assert.truthy(H.wait_until(function() return #C.workers_of("lend") == 2 end, 15))
    assert.truthy(H.wait_until(function() return not C.alive(co.pid) end, 40), C.slurp(co.err))
    C.started[co.pid] = nil
    assert.matches("OK\t60", C.slurp(co.out), C.slurp(co.err))
    C.kill(n.pid)
  end)

  it("shares one node fairly between two coordinators", function()
    local n = C.node("--cpus 2 --name fair")
    local go = os.tmpname(); os.remove(go)
    local script = C.script([=[
      local pd = require "pd"
      local core = require "pd.core"
      local list = {}
      for i = 1, 40 do list[i] = i end
      local job = pd.map_async(function(x)
        local t = os.clock() + 0.05; while os.clock() < t do end
        return require("pd.core").now() end, list, { chunk = 1 })
      local r = job:results()
      local first, last = math.huge, 0
      for i = 1, 40 do first = math.min(first, r[i]); last = math.max(last, r[i]) end
      print(string.format("%.6f %.6f", first, last))
    ]=])
    local words = " --cpus 0 --nodes " .. n.url
    local a = C.spawn("env PDLUA_HEARTBEAT=" .. C.HB .. " " .. q(H.pdlua) .. " run " .. q(script) .. words, "A")
    assert.truthy(H.wait_until(function() return #C.workers_of("fair") == 2 end, 20))
    local b = C.spawn("env PDLUA_HEARTBEAT=" .. C.HB .. " " .. q(H.pdlua) .. " run " .. q(script) .. words, "B")
    assert.truthy(H.wait_until(function() return not C.alive(a.pid) and not C.alive(b.pid) end, 50))
    C.started[a.pid], C.started[b.pid] = nil, nil
    local a1, aN = C.slurp(a.out):match("([%d.]+) ([%d.]+)")
    local b1, bN = C.slurp(b.out):match("([%d.]+) ([%d.]+)")
    assert.truthy(a1 and b1, C.slurp(a.err) .. C.slurp(b.err))
    -- B got a slot while A still had work: its first task ended before A's last
    assert.is_true(tonumber(b1) < tonumber(aN))
    C.kill(n.pid)
  end)

  it("shows what each node lends and runs in pd.nodes() and pdlua nodes", function()
    local n = C.node("--cpus 2 --gpus 0 --name shown")
    local script = C.script([=[
      local pd = require "pd"
      local job = pd.map_async(function() local t = os.clock() + 0.3; while os.clock() < t do end end,
                               {1, 2, 3, 4}, { chunk = 1 })
      local row
      for _ = 1, 200 do
        for _, x in ipairs(pd.nodes()) do if x.name == "shown" and x.busy == 2 then row = x end end
        if row then break end
        job:wait(0.02)
      end
      job:wait()
      print(row.url, row.cpus, row.gpus, row.busy, row.alive)
    ]=])
    local out, err, rc = C.run(script, "--cpus 0 --nodes " .. n.url)
    assert.equals(0, rc, err)
    assert.equals(n.url .. "\t2\t0\t2\ttrue\n", out)
    out, err, rc = H.pdlua_run("nodes --nodes " .. n.url .. ",tcp://127.0.0.1:1")
    assert.equals(0, rc, err)
    assert.matches(n.url:gsub("%p", "%%%0") .. "%s+name=shown cpus=2 gpus=0 busy=0", out)
    assert.matches("tcp://127.0.0.1:1%s+down:", out)
    C.kill(n.pid)
  end)

  it("finds nodes by their beacons (unicast beacon address) with the secret", function()
    local port = 20000 + math.random(0, 20000)
    local addr = "127.0.0.1:" .. port
    local n = C.node("--cpus 1 --name beacon --announce --secret-file " .. q(secret),
                     "PDLUA_DISCOVERY=" .. addr)
    local out, err, rc = H.sh("env PDLUA_DISCOVERY=" .. addr .. " " .. q(H.pdlua) ..
                              " nodes --discover --wait 1.5 --secret-file " .. q(secret))
    assert.equals(0, rc, err)
    assert.matches(n.url:gsub("%p", "%%%0") .. "%s+name=beacon cpus=1", out)
    -- a listener with another secret hears nothing it trusts
    out, err, rc = H.sh("env PDLUA_DISCOVERY=" .. addr .. " " .. q(H.pdlua) ..
                        " nodes --discover --wait 1 --secret-file " .. q(other))
    assert.not_equals(0, rc)
    assert.matches("no nodes", err)
    -- and a job with --discover uses it
    out, err, rc = C.run(C.script(JOB), "6 0 --cpus 0 --discover --secret-file " .. q(secret),
                         "PDLUA_DISCOVERY=" .. addr)
    assert.equals(0, rc, err)
    assert.matches("^OK 6 beacon=6", out)
    C.kill(n.pid)
  end)

  it("encrypts with TLS (tls+tcp://) and still proves the secret", function()
    if os.execute("command -v openssl >/dev/null 2>&1") ~= true and
       os.execute("command -v openssl >/dev/null 2>&1") ~= 0 then
      pending("openssl is not installed (scripts/deps.sh installs it)")
      return
    end
    local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -p " .. q(dir))
    local _, err, rc = H.sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes " ..
                            "-keyout " .. q(dir .. "/key.pem") .. " -out " .. q(dir .. "/cert.pem") ..
                            " -days 2 -subj /CN=127.0.0.1")   -- mbedtls 2.28 matches the CN, not IP SANs
    assert.equals(0, rc, err)
    local n = C.node("--listen tls+tcp://127.0.0.1:0 --cpus 1 --name tls --secret-file " .. q(secret) ..
                     " --tls-cert " .. q(dir .. "/cert.pem") .. " --tls-key " .. q(dir .. "/key.pem"))
    assert.matches("^tls%+tcp://127.0.0.1:%d+$", n.url)
    local out
    out, err, rc = C.run(C.script(JOB), "6 0 --cpus 0 --secret-file " .. q(secret) ..
                         " --tls-ca " .. q(dir .. "/cert.pem") .. " --nodes " .. n.url)
    assert.equals(0, rc, err)
    assert.matches("^OK 6 tls=6", out)
    -- plain tcp to a TLS node does not get in
    out, err, rc = C.run(C.script(JOB), "1 0 --cpus 0 --secret-file " .. q(secret) .. " --nodes " ..
                         n.url:gsub("^tls%+", ""), "PDLUA_CONNECT_TIMEOUT=1", 4)
    assert.not_equals(0, rc)
    assert.equals(0, #C.workers_of("tls"))
    C.kill(n.pid)
    os.execute("rm -rf " .. q(dir))
  end)
end)
