-- spec/optim_spec.lua: pd.minimize, pd.maximize and the pd.optim optimisers.
-- Every run has a fixed seed: the assertions are exact or have wide margins
-- measured on many seeds (bench/optim), never timing-dependent.
local pd = require "pd"
local H = require "helper"

local function sphere(x)
  local s = 0.0
  for i = 1, #x do s = s + x[i] * x[i] end
  return s
end

local function ellipsoid(x)
  local n, s = #x, 0.0
  for i = 1, n do s = s + 10 ^ (6 * (i - 1) / (n - 1)) * x[i] * x[i] end
  return s
end

local function rosenbrock(x)
  local s = 0.0
  for i = 1, #x - 1 do
    s = s + 100 * (x[i + 1] - x[i] ^ 2) ^ 2 + (1 - x[i]) ^ 2
  end
  return s
end

-- One generation of an ask-and-tell optimiser o on f.
local function generation(o, f)
  local X = o:ask()
  local F = {}
  for k = 1, #X do F[k] = f(X[k]) end
  o:tell(X, F)
end

local function rastrigin(x)
  local s = 10 * #x
  for i = 1, #x do s = s + x[i] ^ 2 - 10 * math.cos(2 * math.pi * x[i]) end
  return s
end

local function close(a, b, tol) return math.abs(a - b) <= tol * math.max(1, math.abs(b)) end

describe("pd.optim.cmaes parameters", function()
  local cmaes = require "pd.optim.cmaes"
  -- printed by pycma 4.4.0
  local ref = {
    { 2, 6, 3, 2.029, 0.15482, 0.08559, 0.6246, 0.5732, 1.5732, -1.207 },
    { 10, 10, 5, 3.167, 0.01528, 0.02355, 0.2950, 0.3196, 1.3196, -0.649 },
    { 20, 12, 6, 3.729, 0.00437, 0.00922, 0.1718, 0.2143, 1.2143, -0.474 },
    { 40, 15, 7, 4.541, 0.00117, 0.00341, 0.0930, 0.1376, 1.1376, -0.343 },
  }
  for _, r in ipairs(ref) do
    it("match pycma 4.4.0 at n = " .. r[1], function()
      local p = cmaes.params(r[1])
      assert.are.equal(r[2], p.lambda)
      assert.are.equal(r[3], p.mu)
      assert.is_true(close(p.mueff, r[4], 1e-3))
      assert.is_true(close(p.c1, r[5], 1e-3))
      assert.is_true(close(p.cmu, r[6], 1e-3))
      assert.is_true(close(p.cc, r[7], 1e-3))
      assert.is_true(close(p.cs, r[8], 1e-3))
      assert.is_true(close(p.damps, r[9], 1e-3))
      local s = 0
      for i = 1, p.lambda do s = s + p.weights[i] end
      assert.is_true(close(s, r[10], 2e-3))
    end)
  end
  it("has pycma's n = 10 weights", function()
    local w = { 0.4563, 0.2708, 0.1622, 0.0852, 0.0255, -0.0800, -0.2218, -0.3446, -0.4529, -0.5497 }
    local p = cmaes.params(10)
    for i = 1, 10 do assert.is_true(math.abs(p.weights[i] - w[i]) < 1e-4) end
  end)
  it("maps every genotype into the box, identity in the middle", function()
    for _, x in ipairs { -1e6, -7, -5.2, -5, -4.9, 0, 3.3, 4.99, 5.01, 9, 1e9 } do
      local y = cmaes.box(x, -5, 5)
      assert.is_true(y >= -5 and y <= 5)
    end
    assert.are.equal(3.3, cmaes.box(3.3, -5, 5))
    assert.are.equal(0, cmaes.box(0, -5, 5))
  end)
end)

describe("the optimisers' native kernels (lua/optim.c) against plain Lua", function()
  local A = require "pd.core.array"
  local K = require "pd.core.optim"
  local cmaes = require "pd.optim.cmaes"
  local function rel(a, b) return math.abs(a - b) / math.max(1, math.abs(b)) end
  local function spd(n, seed)            -- a random symmetric positive definite matrix
    local g = pd.random.new(seed, 0)
    local R = g:normal(0, 1, n, n)
    return R:matmul(R:T()) + A.eye(n)
  end

  it("cma_eigen: C = Bt' diag(D^2) Bt, Bt orthonormal, D ascending, BDt = diag(D) Bt", function()
    local n = 7
    local C = spd(n, 1)
    C:set(1, 2, C:get(1, 2) + 1e-9)      -- not quite symmetric: made so first
    local Bt, BDt, D = A.zeros(n, n), A.zeros(n, n), A.zeros(n)
    local dmin, dmax = K.cma_eigen(C, Bt, BDt, D)
    assert.are.equal(C:get(1, 2), C:get(2, 1))
    assert.are.equal(D[1], dmin)
    assert.are.equal(D[n], dmax)
    for k = 2, n do assert.is_true(D[k - 1] <= D[k]) end
    local BBt = Bt:matmul(Bt:T())
    for i = 1, n do
      for j = 1, n do
        assert.is_true(math.abs(BBt:get(i, j) - (i == j and 1 or 0)) < 1e-12)
        assert.is_true(rel(BDt:get(i, j), D[i] * Bt:get(i, j)) < 1e-15)
        local c = 0
        for k = 1, n do c = c + Bt:get(k, i) * D[k] ^ 2 * Bt:get(k, j) end
        assert.is_true(rel(c, C:get(i, j)) < 1e-12)
      end
    end
  end)

  it("cma_ask: Y = Z BDt and X = box(mean + sigma sv .* y), as new lists", function()
    local n, lam = 4, 6
    local lo, hi = { -5, -5, 0, -1 }, { 5, 5, 1, 1 }
    local es = cmaes.new { dim = n, x0 = { 4.9, -4.9, 0.5, 0 }, sigma0 = 3, lower = lo, upper = hi, seed = 2 }
    local Z = pd.random.new(3, 0):normal(0, 1, lam, n)
    local BDt = spd(n, 4)
    local Y, X = A.zeros(lam, n), A.zeros(lam, n)
    local sv = A.array { 1, 0.5, 2, 1 }
    local pts = K.cma_ask(Z, BDt, Y, X, es.mean, 3, sv, es.box)
    local Yref = Z:matmul(BDt)
    local m = es.mean:totable()
    for k = 1, lam do
      for i = 1, n do
        assert.is_true(rel(Y:get(k, i), Yref:get(k, i)) < 1e-14)
        local want = cmaes.box(m[i] + 3 * sv[i] * Y:get(k, i), lo[i], hi[i])
        assert.is_true(rel(pts[k][i], want) < 1e-14)
        assert.are.equal(X:get(k, i), pts[k][i])
        assert.is_true(pts[k][i] >= lo[i] and pts[k][i] <= hi[i])
      end
    end
    pts[1][1] = 99                        -- the caller's to keep
    assert.are_not.equal(99, X:get(1, 1))
  end)

  it("cma_rank: best first, ties in sample order", function()
    local order, sorted = K.cma_rank { 3, 1, 2, 1, -math.huge }
    assert.are.same({ 5, 2, 4, 3, 1 }, order)
    assert.are.same({ -math.huge, 1, 1, 2, 3 }, sorted)
  end)

  it("cma_tell: one update equals the formulas of pycma's aCMA rule written out in Lua", function()
    local n = 5
    local lo, hi = {}, {}
    for i = 1, n do lo[i], hi[i] = -3, 3 end
    local es = cmaes.new { dim = n, x0 = { 1, -1, 0.5, 2, 0 }, sigma0 = 1, lower = lo, upper = hi, seed = 5 }
    -- a few generations first, so that C, B, D and the paths are not trivial
    for _ = 1, 6 do generation(es, rosenbrock) end
    local X = es:ask()
    local F = {}
    for k = 1, #X do F[k] = rosenbrock(X[k]) end
    -- the reference, from the state before tell
    local lam, mu, w = es.lambda, es.mu, es.weights
    local Yl, Bt, D = es.pending_y:totable(), es.Bt:totable(), es.D:totable()
    local m, ps, pc, sv = es.mean:totable(), es.ps:totable(), es.pc:totable(), es.sv:totable()
    local C, sigma, g = es.C:totable(), es.sigma, es.countiter + 1
    local order = K.cma_rank(F)
    local function cis(y)                -- C^-1/2 y = B diag(1/D) B' y
      local t, z = {}, {}
      for k = 1, n do
        t[k] = 0
        for i = 1, n do t[k] = t[k] + Bt[k][i] * y[i] end
        t[k] = t[k] / D[k]
      end
      for i = 1, n do
        z[i] = 0
        for k = 1, n do z[i] = z[i] + Bt[k][i] * t[k] end
      end
      return z
    end
    local yw = {}
    for i = 1, n do
      yw[i] = 0
      for r = 1, mu do yw[i] = yw[i] + w[r] * Yl[order[r]][i] end
    end
    local m2, ps2, pc2, nps = {}, {}, {}, 0
    local zw = cis(yw)
    for i = 1, n do
      m2[i] = m[i] + sigma * sv[i] * yw[i]
      ps2[i] = (1 - es.cs) * ps[i] + math.sqrt(es.cs * (2 - es.cs) * es.mueff) * zw[i]
      nps = nps + ps2[i] ^ 2
    end
    local hsig = (nps / (1 - (1 - es.cs) ^ (2 * g)) / n - 1 < 1 + 4 / (n + 1)) and 1 or 0
    for i = 1, n do pc2[i] = (1 - es.cc) * pc[i] + hsig * math.sqrt(es.cc * (2 - es.cc) * es.mueff) * yw[i] end
    local c1a = es.c1 * (1 - (1 - hsig) * es.cc * (2 - es.cc))
    local wsum = 0
    for r = 1, lam do wsum = wsum + w[r] end
    local C2 = {}
    for i = 1, n do
      C2[i] = {}
      for j = 1, n do C2[i][j] = (1 - c1a - es.cmu * wsum) * C[i][j] + es.c1 * pc2[i] * pc2[j] end
    end
    for r = 1, lam do
      local y, wr = Yl[order[r]], w[r]
      if wr < 0 then
        local z, s2 = cis(y), 0
        for i = 1, n do s2 = s2 + z[i] ^ 2 end
        wr = wr * n / (math.sqrt(s2) + 1e-9) ^ 2
      end
      for i = 1, n do
        for j = 1, n do C2[i][j] = C2[i][j] + es.cmu * wr * y[i] * y[j] end
      end
    end
    local s = (es.cs / es.damps) * (math.sqrt(nps) / es.chiN - 1)
    local sigma2 = sigma * math.exp(math.max(-1, math.min(1, s)))
    es:tell(X, F)
    for i = 1, n do
      assert.is_true(rel(es.mean[i], m2[i]) < 1e-13)
      assert.is_true(rel(es.ps[i], ps2[i]) < 1e-12)
      assert.is_true(rel(es.pc[i], pc2[i]) < 1e-12)
      assert.is_true(rel(es.dC[i], C2[i][i]) < 1e-12)
      for j = 1, n do assert.is_true(rel(es.C:get(i, j), C2[i][j]) < 1e-12) end
    end
    assert.is_true(rel(es.sigma, sigma2) < 1e-13)
  end)

  it("cma_tell keeps every coordinate's standard deviation at most (ub - lb) / 3", function()
    -- a flat function: sigma grows until pycma's maxstd holds it
    local es = cmaes.new { dim = 3, x0 = { 0, 0, 0 }, sigma0 = 1, lower = { -1, -1, -1 }, upper = { 1, 1, 1 }, seed = 1 }
    for _ = 1, 40 do
      local X = es:ask()
      local F = {}
      for k = 1, #X do F[k] = k end        -- the first sample always best: a steady drift
      es:tell(X, F)
      for i = 1, 3 do assert.is_true(es.sigma * es.sv[i] * math.sqrt(es.dC[i]) <= 2 / 3 * (1 + 1e-9)) end
    end
    assert.is_true(es.sv[1] < 1)          -- it did bind
  end)

  it("pso_move is SPSO-2011's move with confinement, drawing d then u", function()
    local n, S = 6, 5
    local g1, g2 = pd.random.new(9, 1), pd.random.new(9, 1)
    local X, V, P = pd.random.new(1, 0):uniform(-1, 1, S, n), pd.random.new(2, 0):uniform(-1, 1, S, n),
                    pd.random.new(3, 0):uniform(-1, 1, S, n)
    local box = A.zeros(2, n)
    for i = 1, n do box:set(1, i, -0.9); box:set(2, i, 0.9) end
    local c, w = 0.5 + math.log(2), 1 / (2 * math.log(2))
    for _, sl in ipairs { { 2, 4 }, { 3, 3 } } do
      local s, l = sl[1], sl[2]
      local x, v, p, pl = X:row(s):totable(), V:row(s):totable(), P:row(s):totable(), P:row(l):totable()
      K.pso_move(g1, X, V, P, s, l, box, c, w)
      local G, rad = {}, 0
      for i = 1, n do
        G[i] = l == s and x[i] + c * (p[i] - x[i]) / 2 or x[i] + c * (p[i] + pl[i] - 2 * x[i]) / 3
        rad = rad + (G[i] - x[i]) ^ 2
      end
      local d, dn = {}, 0
      for i = 1, n do d[i] = g2:normal(); dn = dn + d[i] ^ 2 end
      local r = math.sqrt(rad) * g2:uniform() / math.sqrt(dn)
      for i = 1, n do
        local vi = w * v[i] + G[i] + r * d[i] - x[i]
        local xi = x[i] + vi
        if xi < -0.9 then xi, vi = -0.9, -0.5 * vi elseif xi > 0.9 then xi, vi = 0.9, -0.5 * vi end
        assert.is_true(rel(X:get(s, i), xi) < 1e-14)
        assert.is_true(rel(V:get(s, i), vi) < 1e-14)
      end
    end
    assert.are.equal(g2:uniform(), g1:uniform())   -- the same draws, in the same order
  end)

  it("ga_offspring ranks, keeps the elites, draws tournaments, then SBX and mutation as gene-by-gene Lua", function()
    local n = 8
    local g1, g2 = pd.random.new(4, 2), pd.random.new(4, 2)
    local xl, xu, lo, hi = -2, 3, -1, 2.5
    local B = A.zeros(4, n)
    for i = 1, n do B:set(1, i, xl); B:set(2, i, xu); B:set(3, i, lo); B:set(4, i, hi) end
    local function sbx(a, b, eta)
      for i = 1, n do
        if g2:uniform() <= 0.5 then
          local x1, x2 = a[i], b[i]
          if math.abs(x1 - x2) > 1e-14 then
            if x1 > x2 then x1, x2 = x2, x1 end
            local r = g2:uniform()
            local function bq(beta)
              local alpha = 2 - beta ^ -(eta + 1)
              if r <= 1 / alpha then return (r * alpha) ^ (1 / (eta + 1)) end
              return (1 / (2 - r * alpha)) ^ (1 / (eta + 1))
            end
            local c1 = 0.5 * (x1 + x2 - bq(1 + 2 * (x1 - xl) / (x2 - x1)) * (x2 - x1))
            local c2 = 0.5 * (x1 + x2 + bq(1 + 2 * (xu - x2) / (x2 - x1)) * (x2 - x1))
            c1, c2 = math.min(math.max(c1, xl), xu), math.min(math.max(c2, xl), xu)
            if g2:uniform() <= 0.5 then a[i], b[i] = c2, c1 else a[i], b[i] = c1, c2 end
          end
        end
      end
    end
    local function mutate(x, eta, pm)
      for i = 1, n do
        if g2:uniform() <= pm then
          local d1, d2 = (x[i] - xl) / (xu - xl), (xu - x[i]) / (xu - xl)
          local r, dq = g2:uniform()
          if r < 0.5 then dq = (2 * r + (1 - 2 * r) * (1 - d1) ^ (eta + 1)) ^ (1 / (eta + 1)) - 1
          else dq = 1 - (2 * (1 - r) + 2 * (r - 0.5) * (1 - d2) ^ (eta + 1)) ^ (1 / (eta + 1)) end
          x[i] = math.min(math.max(x[i] + dq * (xu - xl), xl), xu)
        end
      end
    end
    -- an island of m individuals, two of them tied in value (ties go by row)
    local m, N, elites = 7, 9, 2
    local rowsX, F = {}, {}
    for k = 1, m do
      rowsX[k] = {}
      for i = 1, n do rowsX[k][i] = ((k * 7 + i * 3) % 11) / 3 - 1 end
      F[k] = (k * 5) % 7
    end
    F[6] = F[2]
    local X = A.array(rowsX)
    local Y, Fe, out = K.ga_offspring(g1, X, F, N, elites, B, 20, 0.9, 20, 0.5)
    local rank = {}
    for k = 1, m do rank[k] = k end
    table.sort(rank, function(a, b) return F[a] < F[b] or (F[a] == F[b] and a < b) end)
    local ny, nx = Y:shape()
    assert.are.equal(N, ny); assert.are.equal(n, nx)
    assert.are.equal(elites, #Fe); assert.are.equal(N - elites, #out)
    for e = 1, elites do
      assert.are.equal(F[rank[e]], Fe[e])
      for i = 1, n do assert.are.equal(rowsX[rank[e]][i], Y:get(e, i)) end
    end
    local function tournament()
      local a, b = rank[g2:integers(1, m)], rank[g2:integers(1, m)]
      return F[b] < F[a] and b or a
    end
    local made = elites
    while made < N do
      local pa, pb = tournament(), tournament()
      local ra, rb = {}, {}
      for i = 1, n do ra[i], rb[i] = rowsX[pa][i], rowsX[pb][i] end
      if g2:uniform() <= 0.9 then sbx(ra, rb, 20) end
      mutate(ra, 20, 0.5); mutate(rb, 20, 0.5)
      for _, child in ipairs { ra, rb } do
        if made < N then
          made = made + 1
          for i = 1, n do
            local want = math.min(math.max(child[i], lo), hi)
            assert.are.equal(want, Y:get(made, i))
            assert.are.equal(want, out[made - elites][i])
          end
        end
      end
    end
    assert.are.equal(g2:uniform(), g1:uniform())   -- the same draws, in the same order
    -- the lists handed out are the caller's: changing one leaves Y alone
    local before = Y:get(elites + 1, 1)
    out[1][1] = 1e9
    assert.are.equal(before, Y:get(elites + 1, 1))
  end)

  it("maxstd: the largest coordinate standard deviation of an array, lists or blocks", function()
    local P = pd.random.new(6, 0):normal(0, 1, 30, 4)
    P:col(3):scale(5)
    local rows, top, rest = P:totable(), {}, {}
    for k, x in ipairs(rows) do if k <= 12 then top[#top + 1] = x else rest[#rest + 1] = x end end
    local want = P:col(3):std()
    assert.is_true(rel(K.maxstd(P), want) < 1e-12)
    assert.is_true(rel(K.maxstd(rows), want) < 1e-12)
    assert.is_true(rel(K.maxstd({ A.array(top), A.array(rest) }), want) < 1e-12)
    assert.are.equal(0, K.maxstd({}))
  end)
end)

describe("CMA-ES convergence (as good as pycma, fixed seeds)", function()
  local function run(f, n, lo, hi, seed)
    return pd.minimize(f, { dim = n, bounds = { lo, hi }, seed = seed, target = 1e-8, budget = 1e5 })
  end
  it("solves the 10-D sphere in about pycma's 1511 evaluations", function()
    local r = run(sphere, 10, -5.12, 5.12, 1)
    assert.are.equal("target", r.stop)
    assert.is_true(r.f <= 1e-8)
    assert.is_true(r.evaluations < 1900, r.evaluations)
  end)
  it("solves the 10-D ellipsoid (condition 1e6) thanks to the active update", function()
    local r = run(ellipsoid, 10, -5, 5, 2)
    assert.are.equal("target", r.stop)
    assert.is_true(r.evaluations < 5000, r.evaluations)
  end)
  it("solves the 10-D Rosenbrock function, which Playdoh's CMA-ES fails", function()
    local r = run(rosenbrock, 10, -2.048, 2.048, 3)
    assert.are.equal("target", r.stop)
    assert.is_true(r.evaluations < 8000, r.evaluations)
    for i = 1, 10 do assert.is_true(math.abs(r.x[i] - 1) < 1e-3) end
  end)
  it("is rotation invariant: a rotated ellipsoid costs what the plain one costs", function()
    local n = 8
    local g = pd.random.new(99)
    local M = pd.zeros(n, n)
    for i = 1, n do for j = i, n do
      local v = g:normal(); M:set(i, j, v); M:set(j, i, v)
    end end
    local _, Q = pd.linalg.eigh(M)                 -- a random orthogonal matrix
    local R = Q:totable()
    local function rotated(x)
      local y = {}
      for i = 1, n do
        local s = 0
        for j = 1, n do s = s + R[i][j] * x[j] end
        y[i] = s
      end
      return ellipsoid(y)
    end
    local plain, rot = 0, 0
    for seed = 1, 3 do
      local spec = { dim = n, init = { -3, 3 }, seed = seed, target = 1e-8 }
      local a, b = pd.minimize(ellipsoid, spec), pd.minimize(rotated, spec)
      assert.are.equal("target", a.stop)
      assert.are.equal("target", b.stop)
      plain, rot = plain + a.evaluations, rot + b.evaluations
    end
    assert.is_true(math.abs(rot / plain - 1) < 0.15, rot / plain)
  end)
  it("stops by its own termination criteria when no target is given", function()
    local r = pd.minimize(sphere, { dim = 4, bounds = { -3, 3 }, seed = 5 })
    assert.is_truthy(({ tolfun = 1, tolx = 1, tolfunhist = 1 })[r.stop], r.stop)
    assert.is_true(r.f < 1e-9)
  end)
  it("IPOP restarts solve the 2-D Rastrigin function", function()
    local r = pd.minimize(rastrigin, { dim = 2, bounds = { -5.12, 5.12 }, seed = 4,
                                       restarts = 9, target = 1e-8, budget = 1e5 })
    assert.are.equal("target", r.stop)
    assert.is_true(r.runs >= 1)
  end)
  it("counts every restart against one budget and keeps the best ever", function()
    local r = pd.minimize(rastrigin, { dim = 10, bounds = { -5.12, 5.12 }, seed = 1,
                                       restarts = 3, budget = 6000 })
    assert.are.equal("budget", r.stop)
    assert.is_true(r.evaluations >= 6000 and r.evaluations < 6000 + 200)
    assert.is_true(r.runs > 1)
    local best = math.huge
    for _, h in ipairs(r.history) do best = math.min(best, h.best) end
    assert.are.equal(best, r.f)
  end)
  it("BIPOP restarts run small and large regimes", function()
    local r = pd.minimize(rastrigin, { dim = 5, bounds = { -5.12, 5.12 }, seed = 2,
                                       restarts = { max = 4, bipop = true }, budget = 20000 })
    assert.is_true(r.runs > 2)
    assert.is_true(r.f < 10)
  end)
end)

describe("Playdoh's own optimisation tests", function()
  for _, alg in ipairs { "cmaes", "pso", "ga" } do
    it("maximise exp(-x^2), popsize 1000, 3 iterations: |x| < 0.1 with " .. alg, function()
      local r = pd.maximize(function(p) return math.exp(-p.x ^ 2) end,
        { algorithm = alg, popsize = 1000, maxiter = 3, params = { x = { -5, 5 } }, seed = 7 })
      assert.is_true(math.abs(r.x.x) < 0.1)
      assert.are.equal(3, r.iterations)
      assert.are.equal("maxiter", r.stop)
    end)
  end
  it("named parameters with underscores work (x_0)", function()
    local r = pd.maximize(function(p) return math.exp(-p.x_0 ^ 2) end,
      { algorithm = "pso", popsize = 1000, maxiter = 3, params = { x_0 = { -5, 5 } }, seed = 3 })
    assert.is_true(math.abs(r.x.x_0) < 0.1)
  end)
  -- across two loopback nodes: spec/optim_cluster_spec.lua
end)

describe("pd.minimize specs", function()
  it("gives the same result for the same seed, and another for another seed", function()
    for _, alg in ipairs { "cmaes", "pso", "ga" } do
      local spec = { algorithm = alg, dim = 3, bounds = { -2, 2 }, seed = 11, maxiter = 20 }
      local a, b = pd.minimize(sphere, spec), pd.minimize(sphere, spec)
      assert.are.same(a.x, b.x)
      assert.are.equal(a.f, b.f)
      spec.seed = 12
      local c = pd.minimize(sphere, spec)
      assert.are_not.equal(a.f, c.f)
    end
  end)
  it("maximize(f) is minimize(-f) on the same trajectory", function()
    local spec = { dim = 3, bounds = { -2, 2 }, seed = 3, maxiter = 30 }
    local a = pd.maximize(function(x) return -sphere(x) end, spec)
    local b = pd.minimize(sphere, spec)
    assert.are.same(a.x, b.x)
    assert.are.equal(-b.f, a.f)
    assert.are.equal(-b.history[5].best, a.history[5].best)
  end)
  it("honours 4-element params, bounds suffixes and keeps points in the bounds", function()
    for _, alg in ipairs { "cmaes", "pso", "ga" } do
      local seen_out = false
      local r = pd.minimize(function(p)
        if p.a < 1 or p.a > 2 or p.b_c < -1 or p.b_c > 0 then seen_out = true end
        return (p.a - 3) ^ 2 + (p.b_c + 5) ^ 2 + p.free ^ 2
      end, { algorithm = alg, seed = 2, budget = 3000,
             params = { a = { 1, 1.2, 1.8, 2 }, b_c_bounds = { -1, 0 }, free = { -1, 1 } } })
      assert.is_false(seen_out)
      assert.is_true(math.abs(r.x.a - 2) < 1e-3, alg .. " " .. r.x.a)
      assert.is_true(math.abs(r.x.b_c + 1) < 1e-3, alg)
    end
  end)
  it("accepts one {lo, hi} per dimension and a separate init range", function()
    local r = pd.minimize(sphere, { bounds = { { -1, 1 }, { 2, 3 } }, init = { { 0.5, 1 }, { 2.5, 3 } },
                                    seed = 1, budget = 2000 })
    assert.is_true(math.abs(r.x[1]) < 1e-4)
    assert.is_true(math.abs(r.x[2] - 2) < 1e-4)
  end)
  it("passes extra args after the point", function()
    local r = pd.minimize(function(x, c, k) return (x[1] - c) ^ 2 * k end,
      { dim = 1, bounds = { -10, 10 }, args = { 4, 2 }, seed = 1, target = 1e-12 })
    assert.is_true(math.abs(r.x[1] - 4) < 1e-5)
  end)
  it("stops on budget, maxiter and target and says so", function()
    assert.are.equal("budget", pd.minimize(sphere, { algorithm = "pso", dim = 5, bounds = { -1, 1 },
      budget = 400, seed = 1 }).stop)
    local r = pd.minimize(sphere, { dim = 5, bounds = { -1, 1 }, maxiter = 7, seed = 1 })
    assert.are.equal("maxiter", r.stop)
    assert.are.equal(7, r.iterations)
    assert.are.equal(7 * 8, r.evaluations)
    assert.are.equal("target", pd.minimize(sphere, { algorithm = "ga", dim = 2, bounds = { -1, 1 },
      target = 1e-3, seed = 1 }).stop)
  end)
  it("records the history: best, mean and scale per iteration", function()
    local r = pd.minimize(sphere, { dim = 4, bounds = { -3, 3 }, maxiter = 40, seed = 9 })
    assert.are.equal(40, #r.history)
    for i = 2, 40 do
      local h, p = r.history[i], r.history[i - 1]
      assert.is_true(h.best <= p.best)
      assert.is_true(h.mean >= h.best)
      assert.is_true(h.scale > 0)
      assert.are.equal(i * 8, h.evaluations)
    end
    assert.is_true(r.history[40].scale < r.history[1].scale)
  end)
  it("prints one progress line per iteration", function()
    local lines = {}
    pd.minimize(sphere, { dim = 2, bounds = { -1, 1 }, maxiter = 5, seed = 1,
                          progress = function(l) lines[#lines + 1] = l end })
    assert.are.equal(5, #lines)
    assert.truthy(lines[5]:match("iter 5%s+evals 30%s+best [%d%.e%-]+%s+spread"))
    -- PSO evaluates an iteration in 4 blocks: still one line, one history entry
    lines = {}
    local r = pd.minimize(sphere, { algorithm = "pso", dim = 2, bounds = { -1, 1 }, maxiter = 3,
                                    seed = 1, progress = function(l) lines[#lines + 1] = l end })
    assert.are.equal(3, #lines)
    assert.are.equal(3, #r.history)
    assert.truthy(lines[3]:match("iter 3%s+evals 120%s"))
  end)
  it("runs independent groups in one batch, each as its own seed's run", function()
    local calls = 0
    local r = pd.minimize(function(x, g)
      calls = calls + 1
      return (x[1] - g) ^ 2 + x[2] ^ 2
    end, { dim = 2, bounds = { -5, 5 }, groups = 3, seed = 20, maxiter = 60 })
    assert.are.equal(3, #r.groups)
    for g = 1, 3 do
      assert.is_true(math.abs(r.groups[g].x[1] - g) < 1e-3)
      -- the same as a separate run with seed 20 + g - 1
      local s = pd.minimize(function(x) return (x[1] - g) ^ 2 + x[2] ^ 2 end,
        { dim = 2, bounds = { -5, 5 }, seed = 20 + g - 1, maxiter = 60 })
      assert.are.same(s.x, r.groups[g].x)
      assert.are.equal(s.f, r.groups[g].f)
    end
    assert.are.equal(calls, r.evaluations)
  end)
  it("honours per-group options (Playdoh's per-group optparams)", function()
    local f = function(x) return x[1] ^ 2 + x[2] ^ 2 end
    local r = pd.minimize(f, { algorithm = "pso", dim = 2, bounds = { -5, 5 }, groups = 2, seed = 30,
                               maxiter = 30, options = { { w = 0.5 }, { w = 0.9, c = 1.0 } } })
    local a = pd.minimize(f, { algorithm = "pso", dim = 2, bounds = { -5, 5 }, seed = 30,
                               maxiter = 30, options = { w = 0.5 } })
    local b = pd.minimize(f, { algorithm = "pso", dim = 2, bounds = { -5, 5 }, seed = 31,
                               maxiter = 30, options = { w = 0.9, c = 1.0 } })
    assert.are.equal(a.f, r.groups[1].f)
    assert.are.equal(b.f, r.groups[2].f)
  end)
  it("hands a vectorized fitness the whole population, with the same result", function()
    local blocks = 0
    local spec = { dim = 3, bounds = { -2, 2 }, seed = 5, maxiter = 25 }
    local a = pd.minimize(sphere, spec)
    spec.vectorized = true
    local b = pd.minimize(function(X)
      blocks = blocks + 1
      local out = {}
      for k = 1, #X do out[k] = sphere(X[k]) end
      return out
    end, spec)
    assert.are.equal(25, blocks)
    assert.are.same(a.x, b.x)
  end)
  it("gives the same result serially and on 1 or 2 workers, vectorized or not, in any batches", function()
    local spec = { dim = 4, bounds = { -2, 2 }, seed = 6, maxiter = 20, algorithm = "pso" }
    local a = pd.minimize(rosenbrock, spec)
    for _, cpus in ipairs { 1, 2 } do
      spec.parallel, spec.cpus = true, cpus
      spec.vectorized = nil
      local b = pd.minimize(rosenbrock, spec)
      assert.are.same(a.x, b.x)
      spec.chunk = 1                    -- point by point instead of a batch per worker
      assert.are.same(a.x, pd.minimize(rosenbrock, spec).x)
      spec.chunk = nil
      spec.vectorized = true
      local c = pd.minimize(function(X)
        local out = {}
        for k = 1, #X do
          local x, s = X[k], 0
          for i = 1, #x - 1 do s = s + 100 * (x[i + 1] - x[i] ^ 2) ^ 2 + (1 - x[i]) ^ 2 end
          out[k] = s
        end
        return out
      end, spec)
      assert.are.same(a.x, c.x)
    end
  end)
  it("hands named parameters to a vectorized fitness as columns (Playdoh style)", function()
    local r = pd.minimize(function(P)
      local out = {}
      for k = 1, #P.u do out[k] = (P.u[k] - 1) ^ 2 + (P.v[k] + 1) ^ 2 end
      return out
    end, { params = { u = { -3, 3 }, v = { -3, 3 } }, vectorized = true, seed = 1, budget = 2000 })
    assert.is_true(math.abs(r.x.u - 1) < 1e-4 and math.abs(r.x.v + 1) < 1e-4)
  end)
  it("runs a GA on islands with migration", function()
    local r = pd.minimize(rastrigin, { algorithm = "ga", dim = 5, bounds = { -5.12, 5.12 },
      islands = 4, migration = { every = 10, count = 3, topology = "ring" }, budget = 20000, seed = 1 })
    assert.is_true(r.f < 1e-2, r.f)
    local r2 = pd.minimize(rastrigin, { algorithm = "ga", dim = 5, bounds = { -5.12, 5.12 },
      islands = 4, migration = { every = 10, count = 3, topology = "all" }, budget = 20000, seed = 1 })
    assert.are_not.equal(r.f, r2.f)
    -- any topology: a list of {from, to} edges (here a star around island 1)
    local r3 = pd.minimize(rastrigin, { algorithm = "ga", dim = 5, bounds = { -5.12, 5.12 },
      islands = 4, budget = 20000, seed = 1, migration = { every = 10, count = 2,
      topology = { { 2, 1 }, { 3, 1 }, { 4, 1 }, { 1, 2 }, { 1, 3 }, { 1, 4 } } } })
    assert.is_true(r3.f < 0.1, r3.f)
  end)
  it("runs PSO on islands: swarms in lockstep with migration, the same on workers", function()
    local spec = { algorithm = "pso", dim = 5, bounds = { -5.12, 5.12 }, islands = 4, popsize = 80,
                   migration = { every = 5, count = 2, topology = "ring" }, maxiter = 60, seed = 2 }
    local r = pd.minimize(sphere, spec)
    assert.are.equal(60 * 80, r.evaluations)
    assert.is_true(r.f < 1e-3, r.f)
    local again = pd.minimize(sphere, spec)
    assert.are.equal(r.f, again.f)
    spec.parallel, spec.cpus = true, 2
    local par = pd.minimize(sphere, spec)
    assert.are.same(r.x, par.x)
    spec.parallel, spec.cpus = nil, nil
    spec.migration.every = 1000                  -- no migration: another run
    assert.are_not.equal(r.f, pd.minimize(sphere, spec).f)
  end)
  it("runs CMA-ES on islands: migrants join the next generation, seeded, a valid best", function()
    local spec = { dim = 5, bounds = { -5.12, 5.12 }, islands = 4, popsize = 40, seed = 3,
                   migration = { every = 5, count = 2, topology = "ring" }, budget = 8000 }
    local r = pd.minimize(rastrigin, spec)
    -- migrations every 5 iterations, in the history and the result
    local h = r.history
    assert.is_true(#h >= 10)
    for i, e in ipairs(h) do assert.are.equal(math.floor(e.iteration / 5), e.migrations) end
    assert.are.equal(math.floor(r.iterations / 5), r.migrations)
    assert.is_true(r.migrations >= 2)
    -- a valid best: inside the bounds, its value is f's at r.x, the best of the history
    for i = 1, 5 do assert.is_true(r.x[i] >= -5.12 and r.x[i] <= 5.12) end
    assert.are.equal(rastrigin(r.x), r.f)
    local best = math.huge
    for _, e in ipairs(h) do best = math.min(best, e.best) end
    assert.are.equal(best, r.f)
    assert.is_true(r.evaluations <= 8000 + 40)
    -- the same seed, the same run, also on workers; another seed, another
    local again = pd.minimize(rastrigin, spec)
    assert.are.same(r.x, again.x)
    assert.are.equal(r.f, again.f)
    spec.parallel, spec.cpus = true, 2
    assert.are.same(r.x, pd.minimize(rastrigin, spec).x)
    spec.parallel, spec.cpus = nil, nil
    spec.seed = 4
    assert.are_not.equal(r.f, pd.minimize(rastrigin, spec).f)
    -- no migration (every beyond the run): another run
    spec.seed, spec.migration.every = 3, 100000
    local alone = pd.minimize(rastrigin, spec)
    assert.are.equal(0, alone.migrations)
    assert.are_not.same(r.x, alone.x)
  end)
  it("CMA-ES islands take migrants as samples, evaluated as usual", function()
    local o = pd.optim.cmaes { dim = 3, bounds = { -2, 2 }, islands = 3, seed = 5,
                               migration = { every = 2, count = 1 } }
    local lam = o.members[1].lambda
    local sent
    for it = 1, 6 do
      local X = o:ask()
      assert.are.equal(3 * lam, #X)
      if sent then
        -- ring: island i's best is the last sample of island i % 3 + 1
        for i = 1, 3 do assert.are.same(sent[i], X[(i % 3 + 1) * lam]) end
        sent = nil
      end
      local F = {}
      for k = 1, #X do F[k] = sphere(X[k]) end
      o:tell(X, F)
      if it % 2 == 0 then
        sent = {}
        for i, m in ipairs(o.members) do sent[i] = m:best() end
      end
    end
    assert.are.equal(3, o.migrations)
    for _, m in ipairs(o.members) do
      assert.are.equal(2, m.injected)        -- the third waits for the next ask
      assert.are.equal(1, #m.inject)
    end
    local x, f = o:best()
    assert.are.equal(sphere(x), f)
  end)
  it("rejects a bad spec with a clear message", function()
    assert.has_error(function() pd.minimize(sphere, { bounds = { -1, 1 } }) end)
    assert.has_error(function() pd.minimize(sphere, { dim = 2 }) end)
    assert.has_error(function() pd.minimize(sphere, { dim = 2, bounds = { 1, -1 } }) end)
    assert.has_error(function() pd.minimize(sphere, { dim = 2, bounds = { -1, 1 }, algorithm = "de" }) end)
  end)
end)

describe("pd.minimize failures", function()
  it("pd.iserror is one check for every part's error objects", function()
    local _, me = pcall(pd.map, function() error("x") end, { 1 })
    local _, oe = pcall(pd.minimize, function() error("y") end, { dim = 1, bounds = { -1, 1 }, seed = 1, maxiter = 2 })
    assert.is_true(pd.iserror(me))
    assert.is_true(pd.iserror(oe))
    assert.is_true(pd.optim.iserror(oe))
    assert.is_false(pd.optim.iserror(me))
    for _, v in ipairs { "error", {}, 1, setmetatable({}, { __pd_error = "yes" }), pd.array { 1 } } do
      assert.is_false(pd.iserror(v))
    end
    assert.is_false(pd.iserror(nil))
  end)
  it("stops with an error object when the fitness raises", function()
    local ok, e = pcall(pd.minimize, function(x)
      if x[1] > 0 then error("boom") end
      return x[1] ^ 2
    end, { dim = 1, bounds = { -1, 1 }, seed = 1, maxiter = 50 })
    assert.is_false(ok)
    assert.is_true(pd.optim.iserror(e))
    assert.is_true(pd.iserror(e))          -- one check for map's and optim's errors
    assert.truthy(tostring(e.message):match("boom"))
    assert.truthy(e.traceback:match("traceback"))
    assert.is_true(e.point[1] > 0)
    assert.truthy(tostring(e):match("at point"))
  end)
  it("reports a NaN instead of ranking it", function()
    local ok, e = pcall(pd.minimize, function(p) return p.x > 0.5 and 0 / 0 or p.x end,
      { params = { x = { 0, 1, 1, 1 } }, seed = 1, algorithm = "pso", maxiter = 10 })
    assert.is_false(ok)
    assert.truthy(e.message:match("NaN"))
    assert.is_true(e.point.x > 0.5)
  end)
  it("reports a value that is not a number", function()
    local ok, e = pcall(pd.minimize, function() return "x" end, { dim = 1, bounds = { 0, 1 }, seed = 1 })
    assert.is_false(ok)
    assert.truthy(e.message:match("not a number"))
  end)
  it("reruns a lost worker's evaluations", function()
    local marker = os.tmpname()
    os.remove(marker)
    local spec = { dim = 3, bounds = { -2, 2 }, seed = 8, maxiter = 15 }
    local plain = pd.minimize(sphere, spec)
    spec.parallel, spec.cpus = true, 2
    -- (locals, so that the function does not carry busted's environment
    -- to the workers)
    local open, exit = io.open, os.exit
    local r = pd.minimize(function(x)
      local f = open(marker, "r")
      if not f then
        open(marker, "w"):close()
        exit(9, false)               -- this worker dies mid-evaluation, once
      end
      f:close()
      local s = 0
      for i = 1, #x do s = s + x[i] * x[i] end
      return s
    end, spec)
    assert.truthy(io.open(marker, "r"))
    os.remove(marker)
    assert.are.same(plain.x, r.x)
    assert.are.equal(plain.f, r.f)
  end)
  it("reports a worker's error with its traceback and the point", function()
    local raise = error
    local ok, e = pcall(pd.minimize, function(x)
      if x[1] > 0 then raise("remote boom") end
      return x[1] ^ 2
    end, { dim = 1, bounds = { -1, 1 }, seed = 1, parallel = true, cpus = 2 })
    assert.is_false(ok)
    assert.truthy(e.message:match("remote boom"))
    assert.truthy(e.traceback:match("traceback"))
    assert.is_true(e.point[1] > 0)
  end)
end)

describe("ask and tell", function()
  for _, alg in ipairs { "cmaes", "pso", "ga" } do
    it("pd.optim." .. alg .. " runs in the user's own loop", function()
      local o = pd.optim[alg] { dim = 4, bounds = { -3, 3 }, seed = 1 }
      for _ = 1, 150 do generation(o, sphere) end
      local x, f = o:best()
      assert.are.equal(4, #x)
      assert.is_true(f < 1e-2, alg .. " " .. f)
    end)
  end
end)

describe("checkpoint and resume", function()
  local script = [[
    local pd = require "pd"
    local kill_at = tonumber(os.getenv("KILL_AT") or "0")
    local calls = 0
    local r = pd.minimize(function(x)
      calls = calls + 1
      if calls == kill_at then os.exit(9, false) end
      local s = 0
      for i = 1, #x - 1 do s = s + 100 * (x[i+1] - x[i]^2)^2 + (1 - x[i])^2 end
      return s
    end, { algorithm = arg[1], dim = 4, bounds = {-2, 2}, seed = 3,
           maxiter = tonumber(os.getenv("MAXITER") or "60"),
           islands = tonumber(arg[3]), migration = { every = 7, count = 2 },
           checkpoint = arg[2] ~= "" and arg[2] or nil, resume = arg[2] ~= "" and arg[2] or nil })
    local digest = 0
    for i, h in ipairs(r.history) do
      digest = digest + i * (h.best + h.mean + h.scale + h.evaluations + h.iteration + (h.migrations or 0))
    end
    io.write(string.format("%.17g %d %d %d %.17g", r.f, r.evaluations, r.iterations, #r.history, digest))
  ]]
  -- For algorithm alg on k islands: body(run, ck) leaves a checkpoint in
  -- file ck, and a run resumed from it must then print what a run without
  -- one prints.  run(env, ckpt) runs the script (env: "NAME=value " words)
  -- with the checkpoint or without one: stdout, stderr, exit status.
  local function resumes_as_plain(alg, k, body)
    local file = H.tmpfile(script, ".lua")
    local ck = os.tmpname()
    os.remove(ck)
    finally(function() os.remove(ck); os.remove(ck .. ".hist"); os.remove(file) end)
    local function run(env, ckpt)
      return H.sh(env .. H.q(H.pdlua) .. " run " .. H.q(file) .. " " .. alg .. " "
                  .. (ckpt and H.q(ck) or "''") .. " " .. k)
    end
    local plain, err, rc = run("", false)
    assert.are.equal(0, rc, err)
    body(run, ck)
    local resumed, err2, rc2 = run("", true)
    assert.are.equal(0, rc2, err2)
    assert.are.equal(plain, resumed)
  end
  for _, case in ipairs { { "cmaes", 1 }, { "pso", 1 }, { "ga", 1 }, { "pso", 3 }, { "ga", 3 },
                          { "cmaes", 3 } } do
    local alg, k = case[1], case[2]
    it("a killed " .. alg .. " run (" .. k .. " islands) resumes and ends where an uninterrupted run ends", function()
      resumes_as_plain(alg, k, function(run, ck)
        local _, _, rc = run("KILL_AT=300 ", true)
        assert.are.equal(9, rc)
        local f = io.open(ck, "rb")
        assert.truthy(f)
        f:close()
      end)
    end)
  end
  for _, case in ipairs { { "cmaes", 1 }, { "pso", 1 }, { "ga", 1 }, { "cmaes", 3 } } do
    local alg, k = case[1], case[2]
    it("a finished " .. alg .. " run (" .. k .. " islands) resumed with a larger maxiter goes on to where a run with that maxiter ends", function()
      resumes_as_plain(alg, k, function(run)
        local short, err, rc = run("MAXITER=25 ", true)
        assert.are.equal(0, rc, err)
        assert.are.equal("25", short:match("^%S+ %d+ (%d+)"))   -- it ended at maxiter
        assert.are.equal(short, (run("MAXITER=25 ", true)))     -- the same maxiter: the same result
      end)
    end)
  end
  it("a CMA-ES run that maxiter and its own criteria stopped at once restarts when resumed with a larger maxiter, as an uninterrupted run does", function()
    local function run(extra)                          -- one problem, these settings
      local spec = { dim = 2, bounds = { -3, 3 }, seed = 5 }
      for k, v in pairs(extra) do spec[k] = v end
      return pd.minimize(sphere, spec)
    end
    local alone = run {}                               -- where the first run stops by itself
    assert.are_not.equal("maxiter", alone.stop)
    local K = alone.iterations
    local ck = os.tmpname()
    os.remove(ck)
    finally(function() os.remove(ck); os.remove(ck .. ".hist") end)
    local plain = run { restarts = 2, maxiter = K + 40 }
    assert.is_true(plain.runs > 1)                     -- it restarted after iteration K
    local first = run { restarts = 2, maxiter = K, checkpoint = ck, resume = ck }
    assert.are.equal("maxiter", first.stop)
    assert.are.equal(1, first.runs)
    local resumed = run { restarts = 2, maxiter = K + 40, checkpoint = ck, resume = ck }
    assert.are.equal(plain.runs, resumed.runs)
    assert.are.equal(plain.evaluations, resumed.evaluations)   -- the final mean's evaluation included
    assert.are.equal(plain.f, resumed.f)
    assert.are.same(plain.x, resumed.x)
    assert.are.equal(plain.stop, resumed.stop)
    assert.are.equal(#plain.history, #resumed.history)
    for i, h in ipairs(plain.history) do
      assert.are.equal(h.evaluations, resumed.history[i].evaluations)
      assert.are.equal(h.best, resumed.history[i].best)
    end
  end)
end)

describe("checkpoints on disk", function()
  local function tmpdir()
    local d = os.tmpname()
    os.remove(d)
    assert(os.execute("mkdir -p " .. H.q(d)))
    finally(function() os.execute("rm -rf " .. H.q(d)) end)
    return d
  end
  local spec = function(ck, maxiter)
    return { dim = 2, bounds = { -3, 3 }, seed = 7, maxiter = maxiter, checkpoint = ck, resume = ck }
  end

  it("a failed write raises, naming the file, and keeps the last good checkpoint", function()
    local d = tmpdir()
    local ck = d .. "/run.ck"
    pd.minimize(sphere, spec(ck, 5))
    local f = assert(io.open(ck, "rb"))
    local good = f:read("*a")
    f:close()
    assert(os.execute("mkdir " .. H.q(ck .. ".tmp")))       -- the new state cannot be written
    local ok, err = pcall(pd.minimize, sphere, spec(ck, 9))
    assert.is_false(ok)
    assert.matches("checkpoint: cannot write " .. d:gsub("%p", "%%%0") .. "/run%.ck", tostring(err))
    f = assert(io.open(ck, "rb"))
    assert.are.equal(good, f:read("*a"))
    f:close()
    -- and a checkpoint in a directory that does not exist is refused at once
    ok, err = pcall(pd.minimize, sphere, spec(d .. "/none/run.ck", 3))
    assert.is_false(ok)
    assert.matches("cannot write", tostring(err))
  end)

  it("is read as text: a precompiled chunk is refused, not run", function()
    local d = tmpdir()
    local ck = d .. "/run.ck"
    local ran = d .. "/ran"
    local f = assert(io.open(ck, "wb"))
    f:write(string.dump(load("io.open(" .. string.format("%q", ran) .. ", 'w'):close() return {}")))
    f:close()
    local ok, err = pcall(pd.minimize, sphere, spec(ck, 3))
    assert.is_false(ok)
    assert.matches("not a text checkpoint", tostring(err))
    assert.is_nil(io.open(ran))
  end)
end)

-- Last in the file: the algorithm registered here stays registered for the
-- rest of this process.
describe("the optimiser registry (stdlib/pd/optim/registry.lua)", function()
  local registry = require "pd.optim.registry"
  local la = require "pd.optim.la"

  -- Random search in the init box, lam points an iteration: the smallest
  -- optimiser the registry's contract allows, written outside the stdlib.
  local RS = {}
  RS.__index = RS
  function RS:ask()
    if not self.X then
      local X = {}
      for k = 1, self.lam do
        local x = {}
        for i = 1, self.n do x[i] = self.rng:range(self.ilo[i], self.ihi[i]) end
        X[k] = x
      end
      self.X = X
    end
    return self.X
  end
  function RS:tell(X, F)
    X = X or self.X
    for k = 1, #F do
      if not self.bf or F[k] < self.bf then self.bf, self.bx = F[k], la.copy(X[k]) end
    end
    self.X = nil
    self.countiter = self.countiter + 1
    if self.countiter >= self.maxiter then self.stop = "maxiter" end
  end
  function RS:best() return self.bx, self.bf end
  function RS:spread() return 0 end

  local rsearch = {
    -- maxiter is pd.minimize's to keep (a resumed run may go on past it);
    -- the ask-and-tell constructor sets o.maxiter from its spec
    make = function(S, _, o, rng)
      return setmetatable({ n = #S.lo, ilo = S.ilo, ihi = S.ihi, rng = rng, lam = o.lam or 8,
                            countiter = 0, maxiter = math.huge }, RS)
    end,
    restore = function(t)
      la.rng_restore(t.rng)
      return setmetatable(t, RS)
    end,
    default_budget = function(n) return 100 * n end,
  }

  it("runs an algorithm registered from outside through pd.minimize, ask-and-tell and checkpoints", function()
    registry.register("rsearch", rsearch)
    local seen_out = false
    local function f(x)
      for i = 1, #x do if x[i] < -1 or x[i] > 1 then seen_out = true end end
      return sphere(x)
    end
    local r = pd.minimize(f, { dim = 3, bounds = { -1, 1 }, algorithm = "rsearch", maxiter = 20,
                               options = { lam = 5 }, seed = 3 })
    assert.are.equal(20, r.iterations)
    assert.are.equal(100, r.evaluations)
    assert.are.equal("maxiter", r.stop)
    assert.is_false(seen_out)
    assert.is_true(r.f < 0.5)
    assert.are.equal(r.f, sphere(r.x))
    -- the same run again from a checkpoint taken at iteration 8
    local ck = os.tmpname()
    os.remove(ck)
    finally(function() os.remove(ck); os.remove(ck .. ".hist") end)
    local spec = { dim = 3, bounds = { -1, 1 }, algorithm = "rsearch", options = { lam = 5 },
                   seed = 3, checkpoint = ck, resume = ck }
    spec.maxiter = 8
    pd.minimize(f, spec)
    spec.maxiter = 20
    local resumed = pd.minimize(f, spec)
    assert.are.equal(r.evaluations, resumed.evaluations)
    assert.are.equal(r.f, resumed.f)
    assert.are.same(r.x, resumed.x)
    -- the ask-and-tell constructor comes with the registration
    local o = pd.optim.rsearch { dim = 2, bounds = { -1, 1 }, seed = 1, maxiter = 4 }
    for _ = 1, 4 do generation(o, sphere) end
    assert.are.equal("maxiter", o.stop)
    local x, fx = o:best()
    assert.are.equal(fx, sphere(x))
    -- and the error for an unknown name lists it with the built-in ones
    local ok, err = pcall(pd.minimize, sphere, { dim = 2, bounds = { -1, 1 }, algorithm = "nope" })
    assert.is_false(ok)
    assert.matches("unknown algorithm 'nope' %(cmaes, pso, ga, rsearch%)", tostring(err))
  end)
end)
