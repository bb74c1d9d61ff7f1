-- pd.minimize / pd.maximize across `pdlua serve` nodes on loopback:
-- Playdoh's own test (maximise exp(-x^2), popsize 1000, 3 iterations,
-- |x| < 0.1 with each algorithm) with the evaluations on two nodes and
-- none in the coordinator (--cpus 0 / cpus = 0).  The fitness appends one
-- line per evaluation to a file named after PDLUA_NODE_NAME (set in a
-- node's workers only), so the spec counts where every evaluation ran.
-- Every process started here is killed and checked gone in teardown.
--
-- Both nodes lend workers before anything is counted (C.LEND): a node joins
-- when it answers, but its workers start only once a map asks for them,
-- and pd.map hands work to the slots it holds.  A run of tiny tasks (3 x
-- 1000 evaluations, well under a second) may be over before a loaded
-- node's first slot comes, and a vectorized run's first batch may be cut
-- before a node has told its CPUs; neither is a fault.  So the job maps
-- until both nodes have run something (bounded), then runs at once (a
-- coordinator keeps its slots 2 s after the work runs out).
local H = require "helper"
local C = require "cluster_helper"
local q = H.q
-- Nothing here tests failure detection: the default heartbeat (1 s, so a
-- node or coordinator is dropped after 4 s of silence), not the helper's
-- 0.2 s, under which a loaded machine can drop a node mid-run.
C.HB = "1"

-- arg: the log folder, the mode ("session": nodes from --nodes;
-- "init": pd.init{nodes=, cpus=0}; "spec": the spec's nodes field, with
-- --cpus 0; a spec's cpus is pd.map's cap on workers per batch, as for
-- map, not a way to keep the coordinator's CPUs out), then node URLs.  Prints "alg x evaluations iterations stop".
local LEND = C.LEND

local JOB = LEND .. [=[
local pd = require "pd"
local dir, mode = arg[1], arg[2]
local urls = {}
for i = 3, #arg do urls[#urls + 1] = arg[i] end
if mode == "init" then pd.init { nodes = urls, cpus = 0 } end
if mode == "spec" then     -- the spec's nodes join the session, not pd.map's
  pd.maximize(function(p) return -p.x_0 ^ 2 end, { algorithm = "pso", popsize = 4, maxiter = 1,
                                                  params = { x_0 = { -5, 5 } }, nodes = urls })
end
for _, alg in ipairs { "cmaes", "pso", "ga" } do
  lend(pd, { "oa", "ob" })
  local spec = { algorithm = alg, popsize = 1000, maxiter = 3, params = { x_0 = { -5, 5 } },
                 seed = 7 }
  if mode == "spec" then spec.nodes = urls end
  local r = pd.maximize(function(p)
    local f = assert(io.open(dir .. "/" .. (os.getenv("PDLUA_NODE_NAME") or "local") .. "." .. alg, "a"))
    f:write(tostring(p.x_0), "\n")
    f:close()
    return math.exp(-p.x_0 ^ 2)
  end, spec)
  print(alg, string.format("%.17g", r.x.x_0), r.evaluations, r.iterations, r.stop)
end
]=]

local function lines_in(path)
  local n = 0
  local f = io.open(path, "rb")
  if not f then return 0 end
  for _ in f:lines() do n = n + 1 end
  f:close()
  return n
end

describe("pd.maximize across two loopback nodes (Playdoh's test)", function()
  local secret, a, b
  setup(function()
    secret = C.secret("optim-secret-" .. math.random(1e9))
    a = C.node("--cpus 2 --name oa --secret-file " .. q(secret))
    b = C.node("--cpus 2 --name ob --secret-file " .. q(secret))
  end)
  teardown(function()
    C.cleanup()
    os.remove(secret)
  end)

  local function check(mode, words)
    local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -p " .. q(dir))
    local out, err, rc = C.run(C.script(JOB), q(dir) .. " " .. mode .. " " .. words ..
                               " --secret-file " .. q(secret), nil, 50)
    assert.equals(0, rc, err)
    local seen = 0
    for line in out:gmatch("[^\n]+") do
      local alg, x, evals, iters, stop = line:match("^(%a+)\t(%S+)\t(%d+)\t(%d+)\t(%a+)$")
      assert.truthy(alg, "odd line: " .. line)
      seen = seen + 1
      x, evals = tonumber(x), tonumber(evals)
      assert.is_true(math.abs(x) < 0.1, alg .. ": x_0 = " .. x)
      assert.equals("3", iters)
      assert.equals("maxiter", stop)
      -- every evaluation ran on a node, both nodes took part, none here
      local na, nb = lines_in(dir .. "/oa." .. alg), lines_in(dir .. "/ob." .. alg)
      assert.equals(0, lines_in(dir .. "/local." .. alg), alg .. " evaluated in the coordinator")
      assert.is_true(na > 0 and nb > 0, alg .. ": oa=" .. na .. " ob=" .. nb .. "\n" .. err)
      assert.equals(evals, na + nb, alg)
    end
    assert.equals(3, seen, out .. err)
    os.execute("rm -rf " .. q(dir))
  end

  it("with the session's nodes (--nodes, --cpus 0), x_0 named with an underscore", function()
    check("session", "--cpus 0 --nodes " .. a.url .. "," .. b.url)
  end)

  it("with pd.init{nodes=, cpus=0}", function()
    check("init", a.url .. " " .. b.url)
  end)

  it("with the spec's nodes (as for pd.map) and --cpus 0", function()
    check("spec", "--cpus 0 " .. a.url .. " " .. b.url)
  end)

  -- one block per worker: 2 + 2 on the nodes (they have told their CPUs
  -- once they lend), none here; which node takes which of these small
  -- tasks is pd.map's business
  it("spreads a vectorized fitness in one block per node CPU", function()
    local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -p " .. q(dir))
    local script = C.script(LEND .. ([=[
      local pd = require "pd"
      lend(pd, { "oa", "ob" })
      local r = pd.minimize(function(X)
        local rows = X:shape()
        local f = assert(io.open(%q .. "/" .. (os.getenv("PDLUA_NODE_NAME") or "local"), "a"))
        local out = {}
        for i = 1, rows do out[i] = X[i][1] ^ 2 + X[i][2] ^ 2 end
        f:write(rows, "\n")
        f:close()
        return out
      end, { dim = 2, bounds = { -3, 3 }, vectorized = true, popsize = 40, maxiter = 5, seed = 4 })
      print(r.evaluations)
    ]=]):format(dir))
    local out, err, rc = C.run(script, "--cpus 0 --nodes " .. a.url .. "," .. b.url ..
                               " --secret-file " .. q(secret), nil, 50)
    assert.equals(0, rc, err)
    local evals = tonumber(out:match("^(%d+)"))
    assert.equals(200, evals)
    assert.equals(0, lines_in(dir .. "/local"))
    local blocks, rows = 0, 0
    for _, name in ipairs { "oa", "ob" } do
      local f = io.open(dir .. "/" .. name, "rb")
      if f then
        for line in f:lines() do blocks, rows = blocks + 1, rows + tonumber(line) end
        f:close()
      end
    end
    -- 5 iterations of 4 blocks of 10 rows
    assert.equals(5 * 4, blocks, err)
    assert.equals(evals, rows)
    os.execute("rm -rf " .. q(dir))
  end)
end)
