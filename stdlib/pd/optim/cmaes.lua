--- pd.optim.cmaes: the covariance matrix adaptation evolution strategy.
--
-- Follows N. Hansen, "The CMA Evolution Strategy: A Tutorial" (2016,
-- arXiv:1604.00772) with the choices of pycma 4.4.0 (N. Hansen et al.,
-- CMA-ES/pycma), which differ from the tutorial in a few constants:
--   * (mu_W, lambda)-aCMA-ES: active covariance update with negative
--     recombination weights (Jastrebski & Arnold, CEC 2006; Hansen & Ros,
--     "Benchmarking a weighted negative covariance matrix update", GECCO
--     2010), weights finalised as in pycma's RecombinationWeights;
--   * c_sigma = (mu_eff + 2) / (n + mu_eff + 3), c_mu with pycma's 0.25 term,
--     sigma's log-step clipped to +-1;
--   * bounds by pycma's BoundTransform, the piecewise linear/quadratic map of
--     the box (BoxConstraintsLinQuadTransformation): the strategy runs
--     unconstrained and f is evaluated at the mapped, always feasible point;
--   * pycma's termination criteria and defaults (tolx, tolfun, tolfunhist,
--     tolstagnation, tolconditioncov, noeffectaxis, noeffectcoord,
--     tolflatfitness, tolxstagnation, tolupsigma, tolfacupx, maxiter).
-- Restarts with increasing population (IPOP: Auger & Hansen, CEC 2005) and
-- BIPOP (Hansen, GECCO BBOB workshop 2009): M.algorithm, at the end.
--
-- Ask and tell:
--   local es = cmaes.new{dim = 10, x0 = {...}, sigma0 = 0.5, seed = 1}
--   while not es.stop do
--     local X = es:ask()              -- list of lambda points (lists)
--     local F = {}; for k = 1, #X do F[k] = f(X[k]) end
--     es:tell(X, F)
--   end
--   local x, fx = es:best()
--
-- The object is plain data (numbers and lists) with a metatable, so it can
-- be written to a checkpoint and read back (cmaes.restore).
local la = require "pd.optim.la"
local K = la.kernels          -- the native steps of a generation (lua/optim.c)

local M = {}
local ES = {}
ES.__index = ES
M.ES = ES

local sqrt, log, exp, floor, ceil, min, max, abs, huge =
  math.sqrt, math.log, math.exp, math.floor, math.ceil, math.min, math.max, math.abs, math.huge

---------------------------------------------------------------------------
-- Strategy parameters (pycma options_parameters.py, recombination_weights.py)
---------------------------------------------------------------------------

--- The default strategy parameters for dimension n and population lambda
-- (default 4 + floor(3 ln n)): a table with lambda, mu, weights (all
-- lambda, negative ones finalised), mueff, cc, cs, c1, cmu, damps, chiN.
function M.params(n, lambda)
  lambda = lambda or (4 + floor(3 * log(n)))
  local mu = floor(lambda / 2)
  local w = {}
  for i = 1, lambda do w[i] = log((lambda + 1) / 2) - log(i) end
  local spos, sneg = 0.0, 0.0
  for i = 1, lambda do
    if w[i] > 0 then spos = spos + w[i] else sneg = sneg + w[i] end
  end
  for i = 1, lambda do if w[i] > 0 then w[i] = w[i] / spos end end
  local s2 = 0.0
  for i = 1, lambda do if w[i] > 0 then s2 = s2 + w[i] * w[i] end end
  local mueff = 1 / s2
  -- mu_eff of the negative weights, a scale-free quantity
  local nsum, nsq = 0.0, 0.0
  for i = 1, lambda do
    if w[i] < 0 then nsum = nsum + w[i]; nsq = nsq + w[i] * w[i] end
  end
  local mueffminus = nsq > 0 and nsum * nsum / nsq or 0

  local cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n)
  local cs = (mueff + 2) / (n + mueff + 3)
  local c1 = 2 * min(1, lambda / 6) / ((n + 1.3) ^ 2 + mueff)
  local cmu = min(1 - c1, 2 * (0.25 + mueff + 1 / mueff - 2) / ((n + 2) ^ 2 + mueff))
  local damps = 1 + 2 * max(0, sqrt((mueff - 1) / (n + 1)) - 1) + cs
  local chiN = sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))

  -- Negative weights: scaled so that |sum w-| is the smallest of the three
  -- limits (pycma finalize_negative_weights): no decay of C from the rank-mu
  -- term, bounded negative mu_eff, and positive definiteness.
  if sneg < 0 then
    local target = min(1 + c1 / cmu, 1 + 2 * mueffminus / (mueff + 2))
    target = min(target, (1 - c1 - cmu) / cmu / n)
    local f = target / -nsum
    for i = 1, lambda do if w[i] < 0 then w[i] = w[i] * f end end
  end
  return { lambda = lambda, mu = mu, weights = w, mueff = mueff, cc = cc,
           cs = cs, c1 = c1, cmu = cmu, damps = damps, chiN = chiN }
end

---------------------------------------------------------------------------
-- Bound transformation (pycma BoxConstraintsLinQuadTransformation)
---------------------------------------------------------------------------

--- Map genotype value x into [lb, ub]: identity inside [lb + al, ub - au],
-- quadratic in the margins, reflected and periodic outside.
local function box(x, lb, ub)
  local al = min((ub - lb) / 2, (1 + abs(lb)) / 20)
  local au = min((ub - lb) / 2, (1 + abs(ub)) / 20)
  if x < lb - 2 * al - (ub - lb) / 2 or x > ub + 2 * au + (ub - lb) / 2 then
    local r = 2 * (ub - lb + al + au)
    local s = lb - 2 * al - (ub - lb) / 2
    x = x - r * floor((x - s) / r)
  end
  if x > ub + au then x = x - 2 * (x - ub - au) end
  if x < lb - al then x = x + 2 * (lb - al - x) end
  if x < lb + al then
    x = lb + (x - (lb - al)) ^ 2 / 4 / al
  elseif x > ub - au then
    x = ub - (x - (ub + au)) ^ 2 / 4 / au
  end
  return x
end
M.box = box

local function transform(self, g)
  local lo, hi = self.lower, self.upper
  if not lo then
    local x = {}
    for i = 1, self.n do x[i] = g[i] end
    return x
  end
  local x = {}
  local il, iu = self.inner_lo, self.inner_hi
  for i = 1, self.n do
    local l, u, v = lo[i], hi[i], g[i]
    if v >= il[i] and v <= iu[i] then x[i] = v      -- the identity part
    elseif l > -huge and u < huge then x[i] = box(v, l, u)
    elseif l > -huge and g[i] < l then x[i] = l + (l - g[i])   -- reflect at a lone bound
    elseif u < huge and g[i] > u then x[i] = u - (g[i] - u)
    else x[i] = g[i] end
  end
  return x
end

-- A genotype g with transform(g) = x for a feasible point x: the identity
-- in the inner part, the inverse of box's quadratic pieces in the margins.
local function untransform(self, x)
  local g = {}
  local lo, hi = self.lower, self.upper
  for i = 1, self.n do
    local v = x[i]
    if lo then
      local l, u = lo[i], hi[i]
      if v < l then v = l elseif v > u then v = u end
      if l > -huge and u < huge then
        local al = min((u - l) / 2, (1 + abs(l)) / 20)
        local au = min((u - l) / 2, (1 + abs(u)) / 20)
        if v < l + al then v = l - al + 2 * sqrt(al * (v - l))
        elseif v > u - au then v = u + au - 2 * sqrt(au * (u - v)) end
      end
    end
    g[i] = v
  end
  return g
end

---------------------------------------------------------------------------
-- Construction
---------------------------------------------------------------------------

local DEFAULTS = {
  tolfun = 1e-11, tolfunhist = 1e-12, tolx = 1e-11, tolconditioncov = 1e14,
  tolflatfitness = 1, tolfacupx = 1e3, tolupsigma = 1e20,
}

--- A new strategy.  opts:
--   dim (n), x0 (list, default zeros), sigma0 (default 1), stds (list of
--   per-coordinate scales of the initial C, default ones), popsize
--   (lambda), lower/upper (lists; -math.huge/math.huge for none), seed or
--   rng (a pd.optim.la generator), maxiter, budget (evaluations), target
--   (stop when f <= target), and pycma's tolerances: tolx, tolfun,
--   tolfunhist, tolstagnation, tolconditioncov, tolflatfitness, tolfacupx,
--   tolupsigma, active (default true).
function M.new(opts)
  local n = opts.dim or (opts.x0 and #opts.x0)
  assert(n and n >= 1, "cmaes: dim must be a positive integer")
  local p = M.params(n, opts.popsize)
  if opts.active == false then
    for i = 1, p.lambda do if p.weights[i] < 0 then p.weights[i] = 0 end end
  end
  local self = setmetatable({}, ES)
  for k, v in pairs(p) do self[k] = v end
  self.n = n
  -- The state the native kernels (lua/optim.c) work on is f64 arrays:
  -- the vectors mean, ps, pc, D, dC, sv, stds0, maxstd and xref of n, the
  -- matrices C, Bt and BDt of n x n.
  self.x0 = {}
  local mean = {}
  for i = 1, n do
    mean[i] = opts.x0 and opts.x0[i] or 0.0
    self.x0[i] = mean[i]
  end
  self.sigma0 = opts.sigma0 or 1.0
  self.sigma = self.sigma0
  local stds = opts.stds
  local D, var, ones = {}, {}, {}
  for i = 1, n do
    local s = stds and stds[i] or 1.0
    D[i], var[i], ones[i] = s, s * s, 1.0
  end
  self.C = la.diag_matrix(n, var)        -- covariance
  self.Bt = la.diag_matrix(n, ones)      -- its eigenvectors, as rows
  self.BDt = la.diag_matrix(n, D)        -- (B D)': the sampling transform
  self.D = la.vector(D)                  -- sqrt of C's eigenvalues
  self.Dmin, self.Dmax = huge, -huge
  for i = 1, n do self.Dmin, self.Dmax = min(self.Dmin, D[i]), max(self.Dmax, D[i]) end
  self.dC = la.vector(var)               -- diag(C), kept by cma_tell
  self.stds0 = la.vector(D)
  self.ps, self.pc = la.vector(n), la.vector(n)
  self.sv = la.vector(ones)              -- pycma's sigma_vec: all 1 unless maxstd binds
  if opts.lower or opts.upper then
    self.lower, self.upper = {}, {}
    for i = 1, n do
      self.lower[i] = opts.lower and opts.lower[i] or -huge
      self.upper[i] = opts.upper and opts.upper[i] or huge
    end
  end
  if self.lower then
    -- pycma's maxstd with bounds: (ub - lb) / 3 (option maxstd_boundrange,
    -- as pycma's; 1/0 for no limit)
    local mx, f = {}, opts.maxstd_boundrange or 1 / 3
    for i = 1, n do mx[i] = (self.upper[i] - self.lower[i]) * f end
    self.maxstd = la.vector(mx)
    -- x0 is a point of the box; the strategy's mean is its genotype
    -- (pycma: gp.geno(x0, from_bounds=BoundTransform.inverse))
    mean = untransform(self, mean)
    -- where the bound transformation is the identity: [lb + al, ub - au]
    self.inner_lo, self.inner_hi = {}, {}
    for i = 1, n do
      local l, u = self.lower[i], self.upper[i]
      if l > -huge and u < huge then
        self.inner_lo[i] = l + min((u - l) / 2, (1 + abs(l)) / 20)
        self.inner_hi[i] = u - min((u - l) / 2, (1 + abs(u)) / 20)
      else
        self.inner_lo[i], self.inner_hi[i] = l, u
      end
    end
    -- the same as rows of one array for cma_ask: lo, hi, inner lo, inner
    -- hi, and box()'s margins al, au
    self.box = la.matrix(6, n)
    for i = 1, n do
      local l, u = self.lower[i], self.upper[i]
      self.box:set(1, i, l); self.box:set(2, i, u)
      self.box:set(3, i, self.inner_lo[i]); self.box:set(4, i, self.inner_hi[i])
      self.box:set(5, i, min((u - l) / 2, (1 + abs(l)) / 20))
      self.box:set(6, i, min((u - l) / 2, (1 + abs(u)) / 20))
    end
  end
  self.mean = la.vector(mean)
  self.rng = opts.rng or la.rng(opts.seed or 0)
  self.countiter, self.countevals = 0, 0
  -- The eigendecomposition (O(n^3), the one cost that grows faster than
  -- n^2 per evaluation) is redone once more than lazy_gap iterations have
  -- passed since the last one.  The default is purecma's (Hansen's
  -- reference code, cma/purecma.py: 0.5 lambda / (c1 + cmu) / n
  -- evaluations): every 2nd iteration at n = 10, every 3rd at n = 40.
  -- pycma's CMAEvolutionStrategy waits 1/(c1 + cmu)/n/10 iterations, less
  -- than one for n > 3 with the default lambda, so it decomposes every
  -- iteration; option updatecovwait (iterations, pycma's name) asks for
  -- that (updatecovwait = 0).  Between decompositions C is updated as usual
  -- and only the sampling transform lags.
  if opts.updatecovwait then
    self.lazy_gap = opts.updatecovwait - 1e-9       -- pycma: wait >= updatecovwait
  else
    self.lazy_gap = 0.5 / (self.c1 + self.cmu) / n
  end
  self.eigen_iter = 0
  -- option lapack_eigen: decompose with LAPACK's dsyevd rather than the
  -- kernel's own Householder + QL (lua/optim.c; for comparisons)
  self.lapack_eigen = opts.lapack_eigen and true or nil
  -- tolxstagnation: [1e-9, 20, 0.1], the mean moved less than 1e-9 over
  -- 20 + 0.1 * iterations iterations
  self.xstag = { count = 0, count_x = 0 }
  self.xref = la.vector(mean)
  self.best_evals = 0
  for k, v in pairs(DEFAULTS) do self[k] = opts[k] or v end
  self.tolstagnation = opts.tolstagnation or floor(100 + 100 * n ^ 1.5 / self.lambda)
  self.maxiter = opts.maxiter or floor(100 + 150 * (n + 3) ^ 2 / sqrt(self.lambda))
  self.budget = opts.budget or huge
  self.target = opts.target
  -- histories: hist, the last floor(10 + 30 n / lambda) best values of a
  -- generation (only their range matters: a ring, next write at hist_pos);
  -- histbest and histmedian, the best and median every 5 iterations,
  -- oldest first (pycma keeps them newest first)
  self.hist, self.hist_pos = {}, 1
  self.hist_len = max(1, floor(10 + 30 * n / self.lambda))
  self.histbest, self.histmedian = {}, {}
  self.flatcount = 0
  self.best_f = huge
  self.best_x = nil
  return self
end

--- Re-attach the methods to a strategy read back from a checkpoint.
function M.restore(t)
  la.rng_restore(t.rng)
  return setmetatable(t, ES)
end

---------------------------------------------------------------------------
-- Ask
---------------------------------------------------------------------------

-- Per strategy, the arrays a generation is sampled into (not part of the
-- state: a checkpoint has no pending generation).
local buffers = setmetatable({}, { __mode = "k" })

local function update_eigen(self)
  self.Dmin, self.Dmax = K.cma_eigen(self.C, self.Bt, self.BDt, self.D, self.lapack_eigen)
  self.eigen_iter = self.countiter
end

--- Sample lambda new points.  Returns a list of points (lists), already
-- mapped into the bounds; tell() expects their values in the same order.
function ES:ask()
  if self.pending then return self.pending_x:totable() end
  if self.countiter > 0 and self.countiter - self.eigen_iter > self.lazy_gap then
    update_eigen(self)
  end
  local n, lam, mean, sigma = self.n, self.lambda, self.mean, self.sigma
  -- the generation's arrays: two sets used in turn, so that the last
  -- generation's points (last_x, for emigrants) stay valid through the next
  local b = buffers[self]
  if not b then
    b = { Z = la.matrix(lam, n), Y = { la.matrix(lam, n), la.matrix(lam, n) },
          X = { la.matrix(lam, n), la.matrix(lam, n) }, k = 1 }
    buffers[self] = b
  end
  b.k = 3 - b.k
  local Z, Yarr, Xarr = b.Z, b.Y[b.k], b.X[b.k]
  self.rng.g:normal(0, 1, Z)          -- as rng:normals(lam, n), filled in place
  local X = K.cma_ask(Z, self.BDt, Yarr, Xarr, mean, sigma, self.sv, self.box)
  -- injected points (immigrate): they take the places of the last samples
  -- (unranked, so any places would do); X is the point itself, its step
  -- y = (g - m) / sigma is clipped to a Mahalanobis length of at most
  -- sqrt(n) + 2n / (n + 2), so that one far migrant cannot tear C apart
  local inj = self.inject
  if inj and #inj > 0 then
    self.inject = nil
    local m = min(#inj, self.lambda - 1)
    local cap = sqrt(n) + 2 * n / (n + 2)
    for j = 1, m do
      local k = self.lambda - m + j
      local x = {}
      for i = 1, n do x[i] = inj[j][i] end
      local g = untransform(self, x)
      local y, m, sv = {}, mean:totable(), self.sv:totable()
      for i = 1, n do y[i] = (g[i] - m[i]) / (sigma * sv[i]) end
      local z = la.rows_times({ y }, self.Bt:T())[1]    -- Bt y
      local len = 0.0
      local D = self.D:totable()
      for i = 1, n do len = len + (z[i] / D[i]) ^ 2 end    -- |C^-1/2 y|^2
      len = sqrt(len)
      if len > cap then
        for i = 1, n do y[i] = y[i] * cap / len end
      end
      for i = 1, n do Yarr:set(k, i, y[i]); Xarr:set(k, i, x[i]) end
      X[k] = la.copy(x)
      self.injected = (self.injected or 0) + 1
    end
  end
  self.pending, self.pending_x, self.pending_y = true, Xarr, Yarr
  return X
end

---------------------------------------------------------------------------
-- Tell
---------------------------------------------------------------------------

local function median(t, a, b)
  local s = {}
  for i = a, b do s[#s + 1] = t[i] end
  table.sort(s)
  local m = #s
  if m == 0 then return 0 end
  if m % 2 == 1 then return s[(m + 1) / 2] end
  return (s[m / 2] + s[m / 2 + 1]) / 2
end

local function check_stop(self, fs, tolx, tolfacupx, noeffectcoord, noeffectaxis)
  local n = self.n
  if self.target and self.best_f <= self.target then return "target" end
  if self.countevals >= self.budget then return "budget" end
  if self.countiter >= self.maxiter then return "maxiter" end
  -- the range of the recent bests, scanned only until it is too wide for
  -- both tests (while the run progresses, after two values)
  local h, tolfun, tolfunhist = self.hist, self.tolfun, self.tolfunhist
  local wide = max(tolfun, tolfunhist)
  local hmax, hmin = -huge, huge
  for i = 1, #h do
    local v = h[i]
    if v > hmax then hmax = v end
    if v < hmin then hmin = v end
    if hmax - hmin >= wide then break end
  end
  if fs[#fs] - fs[1] < tolfun and hmax - hmin < tolfun then return "tolfun" end
  if #h > 9 and hmax - hmin < tolfunhist then return "tolfunhist" end
  -- tolx, tolfacupx, noeffectcoord and noeffectaxis (one principal axis
  -- an iteration, in turn) are tested by cma_tell on the new state
  if tolx then return "tolx" end
  local dmax, dmin = self.Dmax, self.Dmin
  if dmax * dmax > self.tolconditioncov * dmin * dmin then return "conditioncov" end
  if noeffectaxis then return "noeffectaxis" end
  if noeffectcoord then return "noeffectcoord" end
  if self.flatcount > self.tolflatfitness then return "tolflatfitness" end
  local xs = self.xstag
  if xs.count - xs.count_x > 20 + 0.1 * xs.count then return "tolxstagnation" end
  if self.sigma / dmax > self.sigma0 * self.tolupsigma then return "tolupsigma" end
  if tolfacupx then return "tolfacupx" end
  -- stagnation: the best was found in the first half of the stagnation
  -- period, and the recent medians of best and median f (recorded every 5
  -- iterations) are no better than the older ones
  local hb, hm = self.histbest, self.histmedian
  local l = max(self.tolstagnation / 5 / 2, #hb / 10)
  if l <= self.countiter then
    l = floor(l)
    local e = #hb          -- newest first, pycma's [:l] is e - l + 1 .. e
    if self.countiter > n * (5 + 100 / self.lambda)
       and (self.countevals - self.best_evals) / self.lambda > self.tolstagnation / 2
       and #hb > 100 and 2 * l < #hb
       and median(hm, e - l + 1, e) >= median(hm, e - 2 * l + 1, e - l)
       and median(hb, e - l + 1, e) >= median(hb, e - 2 * l + 1, e - l) then
      return "tolstagnation"
    end
  end
  return nil
end

--- Update the distribution from the values F of the points the last ask()
-- returned (X is accepted for symmetry with pycma and checked for size).
-- A NaN or non-number value raises an error naming the point.
function ES:tell(X, F)
  local G = self.pending
  assert(G, "cmaes: tell() without a pending ask()")
  local lam, n = self.lambda, self.n
  if F == nil then F, X = X, nil end
  la.check_values("cmaes", F, lam)
  local Yarr, Xp = self.pending_y, self.pending_x
  self.pending, self.pending_x, self.pending_y = nil, nil, nil
  self.countiter = self.countiter + 1
  self.countevals = self.countevals + lam
  -- rank (ties in sample order)
  local idx, fs = K.cma_rank(F)
  if fs[1] < self.best_f then
    self.best_f = fs[1]
    self.best_x = Xp:row(idx[1]):totable()
    self.best_evals = self.countevals
  end
  -- the generation's points and ranking, for emigrants()
  self.last_x, self.last_order, self.last_f = Xp, idx, fs
  -- flat fitness: the best no better than the value at 3/4 of the ranking
  if fs[1] < fs[floor(0.75 * lam) + 1] then self.flatcount = 0
  else self.flatcount = self.flatcount + 1 end
  -- histories (newest first)
  local pos = self.hist_pos
  self.hist[pos] = fs[1]
  self.hist_pos = pos % self.hist_len + 1
  if self.countiter % 5 == 0 then
    local hb, hm = self.histbest, self.histmedian
    hb[#hb + 1] = fs[1]
    hm[#hm + 1] = median(fs, 1, lam)
    if #hb > 2e4 then table.remove(hb, 1); table.remove(hm, 1) end
  end
  -- mean, paths, covariance and step size in one native step
  -- (lua/optim.c cma_tell: rank one, rank mu, active negative weights
  -- rescaled by n / |C^-1/2 y|^2 so that C stays positive definite, CSA
  -- with the log-step clipped to +-1, the standard deviations held below
  -- maxstd through sv); it also moves the tolxstagnation reference when
  -- the mean moved more than xstag_delta, and returns the coordinate-wise
  -- termination tests
  local xs = self.xstag
  xs.count = xs.count + 1
  self.xstag_delta = 1e-9 * sqrt(max(1, (xs.count - xs.count_x) / (20 + 0.1 * xs.count)))
  local _, moved, tolx, tolfacupx, noeffectcoord, noeffectaxis = K.cma_tell(self, Yarr, idx)
  if moved then xs.count_x = xs.count end

  self.stop = check_stop(self, fs, tolx, tolfacupx, noeffectcoord, noeffectaxis)
  return self.stop
end

--- Migrants for pd.optim.islands: the best point seen so far, then the
-- last generation's best, up to `count` points {x=, f=}.
function ES:emigrants(count)
  local out = {}
  if self.best_x and count >= 1 then
    local x = {}
    for i = 1, self.n do x[i] = self.best_x[i] end
    out[1] = { x = x, f = self.best_f }
  end
  local X, order, fs = self.last_x, self.last_order, self.last_f
  for r = 1, X and self.mu or 0 do
    if #out >= count then break end
    if fs[r] ~= self.best_f then out[#out + 1] = { x = X:row(order[r]):totable(), f = fs[r] } end
  end
  return out
end

--- Take migrants {x=, f=}: each replaces one sample of the next
-- generation (see ask), is evaluated there as usual, and counts in the
-- update by its rank like any sample.  At most lambda - 1 are taken.
function ES:immigrate(list)
  local inj = self.inject or {}
  for _, m in ipairs(list) do
    local x = {}
    for i = 1, self.n do x[i] = m.x[i] end
    inj[#inj + 1] = x
  end
  self.inject = inj
end

--- The best point seen so far (mapped into the bounds) and its value.
function ES:best() return self.best_x, self.best_f end

--- The algorithm's own scale, for progress lines and history: sigma times
-- the largest standard deviation along a coordinate.
function ES:spread()
  if self.top_std then return self.top_std end
  local n, m = self.n, 0.0
  local dC, sv = self.dC:totable(), self.sv:totable()
  for i = 1, n do m = max(m, sv[i] * sv[i] * dC[i]) end
  return self.sigma * sqrt(m)
end

--- The current mean, mapped into the bounds.
function ES:mean_x() return transform(self, self.mean:totable()) end

---------------------------------------------------------------------------
-- pd.minimize's CMA-ES (the contract: pd.optim.registry)
---------------------------------------------------------------------------

local space = require "pd.optim.space"
local islands = require "pd.optim.islands"

-- A strategy for space S: x0 from o.x0 or drawn from rng in the initial
-- range; sigma0 = o.sigma0, or a quarter of the initial range's width
-- (per coordinate, as stds, when the widths differ), times sigma_scale.
local function from_space(S, o, rng, popsize, sigma_scale, budget, target)
  local x0, widths, same = {}, {}, true
  for i = 1, S.n do
    widths[i] = S.ihi[i] - S.ilo[i]
    if widths[i] ~= widths[1] then same = false end
  end
  if o.x0 then
    for i = 1, S.n do x0[i] = o.x0[i] end
  else
    for i = 1, S.n do x0[i] = rng:range(S.ilo[i], S.ihi[i]) end
  end
  local sigma0, stds
  if o.sigma0 then
    sigma0 = o.sigma0 * sigma_scale
  elseif same then
    sigma0 = 0.25 * widths[1] * sigma_scale
  else
    sigma0, stds = 0.25 * sigma_scale, widths
  end
  local opts = {}
  for k, v in pairs(o) do opts[k] = v end
  opts.dim, opts.x0, opts.sigma0, opts.stds, opts.rng = S.n, x0, sigma0, stds, rng
  opts.popsize, opts.budget, opts.target = popsize, budget, target
  if space.bounded(S) then opts.lower, opts.upper = S.lo, S.hi end
  return M.new(opts)
end

M.algorithm = {
  make = function(S, spec, o, rng, budget, target)
    local k = spec.islands or 1
    if k <= 1 then return from_space(S, o, rng, spec.popsize, 1, budget, target) end
    -- an archipelago of strategies, each with its own stream drawn from
    -- rng (so its own start in init) and popsize / k samples (CMA-ES's
    -- default when popsize is not given); migrants join the receiving
    -- island's next generation as samples (ES:immigrate)
    local lam = spec.popsize and max(4, floor(spec.popsize / k)) or nil
    return islands.from_spec(spec, rng, budget, target, function(r)
      return from_space(S, o, r, lam, 1, nil, nil)
    end)
  end,

  restore = islands.restorer(M.restore),

  -- the restarts of group g: spec.restarts = n (IPOP) or {max =, bipop =}
  -- (max 9 by default); lambda0 is the first run's population
  start = function(g, spec)
    g.large_runs = 0
    local r = spec.restarts
    if type(r) == "table" then
      g.restarts_left = r.max or r[1] or 9
      g.bipop = r.bipop and true or false
    else
      g.restarts_left = r or 0
      g.bipop = false
    end
    g.lambda0 = g.algo.lambda
  end,

  -- When the strategy's own criteria stop it, its final mean is evaluated
  -- once (pycma's eval_final_mean: an evaluation like any other, and often
  -- better than the last samples).
  finish = function(g, run)
    if not g.algo.members and run.options().eval_final_mean ~= false then
      run.evaluate({ g.algo:mean_x() })
    end
  end,

  -- Start the group's next run after a stop (IPOP or BIPOP), or return
  -- false when no restart is left.
  restart = function(g, run)
    if g.restarts_left <= 0 or g.algo.members then return false end
    local rng = g.algo.rng
    local lam0 = g.lambda0
    local popsize, scale, maxiter
    if g.bipop then
      g.regime_evals = g.regime_evals or { large = 0, small = 0 }
      g.regime_evals[g.regime or "large"] = g.regime_evals[g.regime or "large"] + g.algo.countevals
      if g.large_runs > 0 and g.regime_evals.small < g.regime_evals.large then
        local u = rng:uniform()
        local lamL = lam0 * 2 ^ g.large_runs
        popsize = max(lam0, floor(lam0 * (lamL / lam0) ^ (u * u)))
        scale = 0.01 ^ rng:uniform()
        maxiter = max(1, floor(0.5 * g.regime_evals.large / popsize))
        g.regime = "small"
      else
        g.large_runs = g.large_runs + 1
        g.restarts_left = g.restarts_left - 1
        popsize, scale = lam0 * 2 ^ g.large_runs, 1
        g.regime = "large"
      end
    else
      g.large_runs = g.large_runs + 1
      g.restarts_left = g.restarts_left - 1
      popsize, scale = lam0 * 2 ^ g.large_runs, 1
    end
    g.algo = from_space(run.S, run.options(), rng, popsize, scale, run.budget_left, run.target)
    if maxiter then g.algo.maxiter = min(g.algo.maxiter, maxiter) end
    return true
  end,
}

return M
