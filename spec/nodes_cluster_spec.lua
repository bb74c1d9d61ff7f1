-- Many machines on one: `pdlua serve` nodes on loopback ports, jobs spread
-- over them, code transport, secrets (wrong and missing ones injected),
-- what pd.nodes() and `pdlua nodes` show, discovery, TLS.  Failures and
-- sharing: failures_cluster_spec.lua.  Every process started here is
-- killed and checked gone in teardown.
local H = require "helper"
local C = require "cluster_helper"
local q = H.q

local JOB = C.JOB       -- records where each task ran, checks its results

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

  it("pdlua secret FILE writes a fresh secret, 0600, never over a file, that nodes accept", function()
    local d = os.tmpname(); os.remove(d)
    assert(os.execute("mkdir -p " .. q(d)))
    finally(function() os.execute("rm -rf " .. q(d)) end)
    local s1, s2 = d .. "/s1", d .. "/s2"
    for _, f in ipairs { s1, s2 } do
      local out, err, rc = H.sh(q(H.pdlua) .. " secret " .. q(f))
      assert.equals(0, rc, err)
      assert.matches("wrote a fresh secret", out)
    end
    local a, b = C.slurp(s1), C.slurp(s2)
    assert.matches("^%x+\n$", a)
    assert.equals(65, #a)
    assert.not_equals(a, b)
    local mode = H.sh("stat -c %a " .. q(s1))
    assert.equals("600", (mode:gsub("%s", "")))
    -- an existing file is never overwritten; no FILE is a usage error
    local _, err, rc = H.sh(q(H.pdlua) .. " secret " .. q(s1))
    assert.equals(1, rc)
    assert.matches("exists: a secret is never overwritten", err)
    assert.equals(a, C.slurp(s1))
    _, _, rc = H.sh(q(H.pdlua) .. " secret")
    assert.equals(2, rc)
    -- the file works as --secret-file on both sides, and another one is refused
    local n = C.node("--cpus 1 --name fresh --secret-file " .. q(s1))
    local out
    out, err, rc = C.run(C.script(JOB), "4 0 --cpus 0 --secret-file " .. q(s1) .. " --nodes " .. n.url)
    assert.equals(0, rc, err)
    assert.matches("^OK 4 fresh=4", out)
    out, err, rc = C.run(C.script(JOB), "4 0 --cpus 0 --secret-file " .. q(s2) .. " --nodes " .. n.url,
                         nil, 20)
    assert.not_equals(0, rc)
    assert.matches("authentication failed: wrong secret", err)
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
