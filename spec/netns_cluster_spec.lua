-- Three hosts and a coordinator as network namespaces joined by a bridge
-- (ip netns + veth), so that the cluster runs over real interfaces: nodes
-- found by multicast beacons (pdlua nodes --discover, pdlua run --discover),
-- a job across the three, one host's link
-- dropped mid-job (`ip link set ... down`: no FIN, no RST, only silence),
-- the job finishing with correct results, the host rejoining when its link
-- comes back.  Needs root (CI runs as root); pending otherwise.
--
-- Everything lives in namespaces this spec creates, named with its pid;
-- addresses are 10.231.7.0/24, used only inside them.  Teardown always
-- kills every process started and deletes every namespace.
local H = require "helper"
local C = require "cluster_helper"
local q = H.q

local P = "pd" .. require("pd.core.map").getpid()
local LAN = P .. "l"
local HOSTS = { "c", "a", "b", "d" }          -- c: the coordinator
local ADDR = { c = "10.231.7.10", a = "10.231.7.11", b = "10.231.7.12", d = "10.231.7.13" }

local function ns(h) return P .. h end
local function sh(cmd)
  local _, err, rc = H.sh(cmd)
  assert(rc == 0, cmd .. ": " .. err)
end

local created = {}

local function teardown_all()
  C.cleanup()
  for n in pairs(created) do
    -- anything left inside (started by this spec) goes with its namespace
    H.sh("for p in $(ip netns pids " .. n .. " 2>/dev/null); do kill -9 $p; done")
    H.sh("ip netns del " .. n)
    created[n] = nil
  end
end

local function build()
  sh("ip netns add " .. LAN)
  created[LAN] = true
  sh("ip -n " .. LAN .. " link add br0 type bridge && ip -n " .. LAN .. " link set br0 up")
  for _, h in ipairs(HOSTS) do
    local n = ns(h)
    sh("ip netns add " .. n)
    created[n] = true
    local v, w = P .. h .. "0", P .. h .. "1"
    sh("ip link add " .. v .. " type veth peer name " .. w)
    sh("ip link set " .. v .. " netns " .. n .. " && ip link set " .. w .. " netns " .. LAN)
    sh("ip -n " .. n .. " addr add " .. ADDR[h] .. "/24 dev " .. v)
    sh("ip -n " .. n .. " link set lo up && ip -n " .. n .. " link set " .. v .. " up")
    sh("ip -n " .. n .. " route add 224.0.0.0/4 dev " .. v)   -- beacons leave by the veth
    sh("ip -n " .. LAN .. " link set " .. w .. " master br0 && ip -n " .. LAN .. " link set " .. w .. " up")
  end
end

describe("a cluster of network namespaces", function()
  local ok_ns, why
  local secret

  setup(function()
    local _, err, rc = H.sh("ip netns add " .. P .. "probe && ip netns del " .. P .. "probe")
    ok_ns = rc == 0
    why = err
    if ok_ns then
      local built, e = pcall(build)
      if not built then
        teardown_all()
        ok_ns, why = false, tostring(e)
      end
    end
    secret = C.secret("netns-secret-" .. math.random(1e9))
  end)

  teardown(function()
    teardown_all()
    os.remove(secret)
    -- nothing of ours is left behind
    local out = H.sh("ip netns list")
    assert.is_nil(out:find(P, 1, true))
  end)

  it("runs a job across three hosts, survives a dropped link, and the host rejoins", function()
    if not ok_ns then
      pending("network namespaces are not permitted here (needs root): " .. (why or ""))
      return
    end
    local nodes = {}
    for _, h in ipairs { "a", "b", "d" } do
      nodes[h] = C.spawn("ip netns exec " .. ns(h) .. " env PDLUA_HEARTBEAT=" .. C.HB .. " " ..
                         q(H.pdlua) .. " serve --listen tcp://" .. ADDR[h] .. ":7000 --cpus 2 --name host" ..
                         h .. " --announce --secret-file " .. q(secret), "node " .. h)
      assert.truthy(H.wait_until(function()
        return C.slurp(nodes[h].out):match("listening on") end, 15), C.slurp(nodes[h].err))
    end
    -- the coordinator's namespace hears all three by multicast beacons
    local out, err, rc = H.sh("ip netns exec " .. ns("c") .. " " .. q(H.pdlua) ..
                              " nodes --discover --wait 2.5 --secret-file " .. q(secret))
    assert.equals(0, rc, err)
    for _, h in ipairs { "a", "b", "d" } do
      assert.matches("tcp://" .. ADDR[h]:gsub("%.", "%%.") .. ":7000%s+name=host" .. h, out)
    end
    -- a job run with --discover finds them the same way
    out, err, rc = H.sh("ip netns exec " .. ns("c") .. " env PDLUA_HEARTBEAT=" .. C.HB ..
                        " timeout -s KILL 40 " .. q(H.pdlua) .. " run " .. q(C.script(C.JOB)) ..
                        " 12 0 --cpus 0 --discover --secret-file " .. q(secret))
    assert.equals(0, rc, err)
    assert.matches("^OK 12 host", out)
    assert.matches("discovered node tcp://10%.231%.7%.1%d:7000", err)
    -- a job over the three; host d's link goes down mid-job
    local go, back = C.flag(), C.flag()
    local script = C.script(([=[
      local pd = require "pd"
      local list = {}
      for i = 1, 120 do list[i] = i end
      local job = pd.map_async(function(x)
        local t = os.clock() + 0.03; while os.clock() < t do end
        return { x * 7, os.getenv("PDLUA_NODE_NAME") } end, list, { chunk = 1 })
      while select(1, job:progress()) < 20 do job:wait(0.05) end
      local f = io.open(%q, "w"); f:write("go"); f:close()
      local r = job:results()
      local on = {}
      for i = 1, 120 do assert(r[i][1] == 7 * i, "wrong result " .. i); on[r[i][2]] = true end
      print("done", r.n, on.hosta and "a" or "-", on.hostb and "b" or "-", on.hostd and "d" or "-")
      io.stdout:flush()
      local until_back = require("pd.core").now() + 60    -- the spec writes it; bounded all the same
      while not io.open(%q) and require("pd.core").now() < until_back do os.execute("sleep 0.05") end
      local deadline = require("pd.core").now() + 20
      local back
      repeat
        for _, n in ipairs(pd.nodes()) do if n.name == "hostd" and n.alive then back = true end end
        if not back then os.execute("sleep 0.1") end
      until back or require("pd.core").now() > deadline
      print("rejoined", back and "yes" or "no")
    ]=]):format(go, back))
    local urls = {}
    for _, h in ipairs { "a", "b", "d" } do urls[#urls + 1] = "tcp://" .. ADDR[h] .. ":7000" end
    local co = C.spawn("ip netns exec " .. ns("c") .. " env PDLUA_HEARTBEAT=" .. C.HB .. " " ..
                       q(H.pdlua) .. " run " .. q(script) .. " --cpus 0 --secret-file " .. q(secret) ..
                       " --nodes " .. table.concat(urls, ","), "coordinator")
    assert.truthy(H.wait_until(function() return io.open(go) end, 30), C.slurp(co.err))
    sh("ip -n " .. LAN .. " link set " .. P .. "d1 down")          -- cut host d off
    assert.truthy(H.wait_until(function() return C.slurp(co.out):match("done[^\n]*\n") end, 40),
                  C.slurp(co.err))
    assert.matches("done\t120\ta\tb\t[d-]", C.slurp(co.out))
    assert.matches("node tcp://10.231.7.13:7000 lost %(silent: no heartbeat%)", C.slurp(co.err))
    -- the node noticed its coordinator went silent and dropped its workers
    assert.truthy(H.wait_until(function() return #C.workers_of("hostd") == 0 end, 15))
    sh("ip -n " .. LAN .. " link set " .. P .. "d1 up")
    local f = io.open(back, "w"); f:write("x"); f:close()
    assert.truthy(H.wait_until(function() return not C.alive(co.pid) end, 40), C.slurp(co.err))
    C.started[co.pid] = nil
    assert.matches("rejoined\tyes", C.slurp(co.out), C.slurp(co.err))
  end)
end)
