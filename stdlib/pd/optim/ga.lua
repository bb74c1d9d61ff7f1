--- pd.optim.ga: a real-coded genetic algorithm with islands.
--
-- Follows the real-coded operators of K. Deb and co-workers, as NSGA-II
-- uses them (Deb, Pratap, Agarwal, Meyarivan, "A fast and elitist
-- multiobjective genetic algorithm: NSGA-II", IEEE TEC 6(2), 2002):
--   * binary tournament selection;
--   * simulated binary crossover, SBX (Deb & Agrawal, "Simulated binary
--     crossover for continuous search space", Complex Systems 9, 1995), in
--     its bounded form, distribution index eta_c = 20, probability 0.9,
--     each gene swapped with probability 1/2;
--   * polynomial mutation (Deb & Goyal, 1996), bounded form, eta_m = 20,
--     per-gene probability 1/n;
--   * generational replacement with elitism (the best `elites` survive).
-- Islands (the island model of Playdoh and PaGMO; D. Izzo, M. Rucinski,
-- F. Biscani, "The generalized island model", 2012): the population is
-- split into `islands` demes that evolve apart; every `every` generations
-- each island sends copies of its best `count` individuals along the edges
-- of a topology ("ring": i -> i+1, "all": every pair, or a list of
-- {from, to}), and they replace the worst of the receiving island.
--
-- Ask and tell: X = o:ask() gives the new individuals of every island
-- (elites are not evaluated again), o:tell(X, F) their values.
local la = require "pd.optim.la"

local M = {}
local GA = {}
GA.__index = GA
M.GA = GA

local huge, floor, ceil, min, max, sqrt = math.huge, math.floor, math.ceil, math.min, math.max, math.sqrt

--- opts: dim, lower/upper (the box; an infinite side is not clipped and
-- the operators use the initial range as the scale), init_lower /
-- init_upper, popsize (all islands together, default 100), islands (1),
-- migration = {every = 20, count = 20% of an island, topology = "ring"},
-- elites (2 per island), eta_c (20), pc (0.9), eta_m (20), pm (1/n), seed
-- or rng, budget, maxiter, target.
function M.new(opts)
  local n = assert(opts.dim, "ga: dim is required")
  local self = setmetatable({}, GA)
  self.n = n
  self.k = opts.islands or 1
  local N = opts.popsize or 100
  self.N = max(4, floor(N / self.k))             -- per island
  local mig = opts.migration or {}
  self.every = mig.every or 20
  self.count = mig.count or ceil(0.2 * self.N)
  self.topology = mig.topology or "ring"
  self.elites = opts.elites or 2
  self.eta_c, self.pc = opts.eta_c or 20, opts.pc or 0.9
  self.eta_m, self.pm = opts.eta_m or 20, opts.pm or 1 / n
  self.rng = opts.rng or la.rng(opts.seed or 0)
  self.lower, self.upper, self.slo, self.shi = {}, {}, {}, {}
  for i = 1, n do
    local l = opts.lower and opts.lower[i] or -huge
    local u = opts.upper and opts.upper[i] or huge
    local il = opts.init_lower and opts.init_lower[i] or l
    local iu = opts.init_upper and opts.init_upper[i] or u
    assert(il > -huge and iu < huge, "ga: the initial range must be finite")
    self.lower[i], self.upper[i] = l, u
    self.slo[i] = l > -huge and l or il       -- the operators' scale
    self.shi[i] = u < huge and u or iu
    self.ilo = self.ilo or {}; self.ihi = self.ihi or {}
    self.ilo[i], self.ihi[i] = il, iu
  end
  self.budget = opts.budget or huge
  self.maxiter = opts.maxiter or huge
  self.target = opts.target
  self.countiter, self.countevals = 0, 0
  self.best_f, self.best_x = huge, nil
  self.pop = {}            -- pop[island] = list of {x = , f = }
  return self
end

function M.restore(t)
  la.rng_restore(t.rng)
  return setmetatable(t, GA)
end

local copy = la.copy

local function clip(self, x)
  for i = 1, self.n do
    if x[i] < self.lower[i] then x[i] = self.lower[i]
    elseif x[i] > self.upper[i] then x[i] = self.upper[i] end
  end
end

-- Bounded SBX on two parents (lists), in place.
local function sbx(self, a, b)
  local rng, eta = self.rng, self.eta_c
  for i = 1, self.n do
    if rng:uniform() <= 0.5 then
      local x1, x2 = a[i], b[i]
      if math.abs(x1 - x2) > 1e-14 then
        if x1 > x2 then x1, x2 = x2, x1 end
        local xl, xu = self.slo[i], self.shi[i]
        local r = rng:uniform()
        local beta = 1 + 2 * (x1 - xl) / (x2 - x1)
        local alpha = 2 - beta ^ -(eta + 1)
        local bq
        if r <= 1 / alpha then bq = (r * alpha) ^ (1 / (eta + 1))
        else bq = (1 / (2 - r * alpha)) ^ (1 / (eta + 1)) end
        local c1 = 0.5 * (x1 + x2 - bq * (x2 - x1))
        beta = 1 + 2 * (xu - x2) / (x2 - x1)
        alpha = 2 - beta ^ -(eta + 1)
        if r <= 1 / alpha then bq = (r * alpha) ^ (1 / (eta + 1))
        else bq = (1 / (2 - r * alpha)) ^ (1 / (eta + 1)) end
        local c2 = 0.5 * (x1 + x2 + bq * (x2 - x1))
        c1 = min(max(c1, xl), xu)
        c2 = min(max(c2, xl), xu)
        if rng:uniform() <= 0.5 then a[i], b[i] = c2, c1 else a[i], b[i] = c1, c2 end
      end
    end
  end
end

-- Bounded polynomial mutation, in place.
local function mutate(self, x)
  local rng, eta = self.rng, self.eta_m
  local mp = 1 / (eta + 1)
  for i = 1, self.n do
    if rng:uniform() <= self.pm then
      local xl, xu = self.slo[i], self.shi[i]
      local d1, d2 = (x[i] - xl) / (xu - xl), (xu - x[i]) / (xu - xl)
      local r = rng:uniform()
      local dq
      if r < 0.5 then
        local v = 2 * r + (1 - 2 * r) * (1 - d1) ^ (eta + 1)
        dq = v ^ mp - 1
      else
        local v = 2 * (1 - r) + 2 * (r - 0.5) * (1 - d2) ^ (eta + 1)
        dq = 1 - v ^ mp
      end
      x[i] = min(max(x[i] + dq * (xu - xl), xl), xu)
    end
  end
end

local function by_f(a, b) return a.f < b.f end

local function tournament(self, P)
  local a, b = P[self.rng:int(#P)], P[self.rng:int(#P)]
  return (b.f < a.f) and b or a
end

-- The edges {from, to} of the migration topology.
local function edges(self)
  local k, t = self.k, self.topology
  if type(t) == "table" then return t end
  local e = {}
  if t == "all" then
    for i = 1, k do for j = 1, k do if i ~= j then e[#e + 1] = { i, j } end end end
  else -- ring
    for i = 1, k do e[#e + 1] = { i, i % k + 1 } end
  end
  return e
end

local function migrate(self)
  local incoming = {}
  for i = 1, self.k do
    table.sort(self.pop[i], by_f)
    incoming[i] = {}
  end
  for _, e in ipairs(edges(self)) do
    local from, to = e[1], e[2]
    for m = 1, min(self.count, #self.pop[from]) do
      local ind = self.pop[from][m]
      local t = incoming[to]
      t[#t + 1] = { x = copy(ind.x), f = ind.f }
    end
  end
  for i = 1, self.k do
    local inc, P = incoming[i], self.pop[i]
    table.sort(inc, by_f)
    for m = 1, min(self.count, #inc) do
      local slot = #P - m + 1
      if inc[m].f < P[slot].f then P[slot] = inc[m] end
    end
  end
end

--- The individuals to evaluate next.
function GA:ask()
  if self.pending then return self.pending_x end
  local X, owner = {}, {}
  local rng = self.rng
  if self.countiter == 0 then
    for isl = 1, self.k do
      for _ = 1, self.N do
        local x = {}
        for i = 1, self.n do x[i] = rng:range(self.ilo[i], self.ihi[i]) end
        X[#X + 1] = x; owner[#owner + 1] = isl
      end
    end
  else
    if self.k > 1 and self.countiter % self.every == 0 then migrate(self) end
    self.next_pop = {}
    for isl = 1, self.k do
      local P = self.pop[isl]
      table.sort(P, by_f)
      local newp = {}
      for e = 1, min(self.elites, #P) do newp[e] = P[e] end
      self.next_pop[isl] = newp
      local need = self.N - #newp
      local made = 0
      while made < need do
        local a = copy(tournament(self, P).x)
        local b = copy(tournament(self, P).x)
        if rng:uniform() <= self.pc then sbx(self, a, b) end
        mutate(self, a); mutate(self, b)
        clip(self, a); clip(self, b)
        X[#X + 1] = a; owner[#owner + 1] = isl; made = made + 1
        if made < need then X[#X + 1] = b; owner[#owner + 1] = isl; made = made + 1 end
      end
    end
  end
  self.pending, self.pending_x = owner, X
  local out = {}
  for k = 1, #X do out[k] = copy(X[k]) end
  return out
end

--- The values of the individuals the last ask() gave, in order.
function GA:tell(X, F)
  local owner = assert(self.pending, "ga: tell() without a pending ask()")
  if F == nil then F = X end
  assert(#F == #owner, "ga: tell() needs " .. #owner .. " values")
  for k = 1, #F do
    if type(F[k]) ~= "number" or F[k] ~= F[k] then
      error(string.format("ga: value %d is %s, not a number", k, tostring(F[k])), 2)
    end
  end
  local Xs = self.pending_x
  self.pending, self.pending_x = nil, nil
  self.countevals = self.countevals + #F
  local pops = self.next_pop or {}
  if self.countiter == 0 then for isl = 1, self.k do pops[isl] = {} end end
  for k = 1, #F do
    local P = pops[owner[k]]
    P[#P + 1] = { x = Xs[k], f = F[k] }
    if F[k] < self.best_f then self.best_f, self.best_x = F[k], copy(Xs[k]) end
  end
  self.pop, self.next_pop = pops, nil
  self.countiter = self.countiter + 1
  if self.target and self.best_f <= self.target then self.stop = "target"
  elseif self.countevals >= self.budget then self.stop = "budget"
  elseif self.countiter >= self.maxiter then self.stop = "maxiter" end
  return self.stop
end

function GA:best() return self.best_x, self.best_f end

--- Spread: the largest standard deviation of a coordinate over all islands.
function GA:spread()
  local m = 0.0
  for i = 1, self.n do
    local s1, s2, c = 0.0, 0.0, 0
    for isl = 1, self.k do
      for _, ind in ipairs(self.pop[isl] or {}) do
        local v = ind.x[i]; s1 = s1 + v; s2 = s2 + v * v; c = c + 1
      end
    end
    if c > 0 then m = max(m, s2 / c - (s1 / c) ^ 2) end
  end
  return sqrt(max(m, 0))
end

return M
