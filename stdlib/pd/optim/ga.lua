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
local K = la.kernels          -- ga_offspring, rows, maxstd (lua/optim.c)

local M = {}
local GA = {}
GA.__index = GA
M.GA = GA

local huge, floor, ceil, min, max = math.huge, math.floor, math.ceil, math.min, math.max

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
  -- the operators' scale and the box as one array, for the native
  -- generation step (K.ga_offspring)
  self.B = la.matrix(4, n)
  for i = 1, n do
    self.B:set(1, i, self.slo[i]); self.B:set(2, i, self.shi[i])
    self.B:set(3, i, self.lower[i]); self.B:set(4, i, self.upper[i])
  end
  self.budget = opts.budget or huge
  self.maxiter = opts.maxiter or huge
  self.target = opts.target
  self.countiter, self.countevals = 0, 0
  self.best_f, self.best_x = huge, nil
  -- pop[island] = {X = the island's individuals as the rows of an f64
  -- array, F = their values}
  self.pop = {}
  self.migrations = 0
  return self
end

function M.restore(t)
  for _, P in ipairs(t.pop) do
    if P.X == nil then   -- before 2026-11-21 an island was a list of {x =, f =}
      error("ga: this checkpoint holds the islands as an older pdlua wrote them; start the run again without resume", 0)
    end
  end
  la.rng_restore(t.rng)
  return setmetatable(t, GA)
end

local copy = la.copy

-- A generation of an island (ga_offspring in lua/optim.c): the island is
-- ranked by value (ties by row), its best `elites` survive, and the other
-- individuals are children made in pairs: each parent by binary
-- tournament, then with probability pc bounded SBX (per gene with
-- probability 1/2, children spread by beta_q, clipped to the scale,
-- swapped with probability 1/2), bounded polynomial mutation of each child
-- (per gene with probability pm), and clipping to the box.

-- The rows of island P in ranked order (value, then row) as lists, and
-- their values.
local function ranked(P)
  local F, idx = P.F, {}
  for k = 1, #F do idx[k] = k end
  table.sort(idx, function(a, b)
    local fa, fb = F[a], F[b]
    return fa < fb or (fa == fb and a < b)
  end)
  local Fs = {}
  for j, k in ipairs(idx) do Fs[j] = F[k] end
  return K.rows(P.X, idx), Fs
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

local function by_f(a, b) return a.f < b.f end

-- Each island sends copies of its best `count` along the edges; an island
-- takes the best of what it receives in place of its worst, each migrant
-- only where it is better than the individual it would replace.
local function migrate(self)
  local rows, vals, incoming = {}, {}, {}
  for i = 1, self.k do
    rows[i], vals[i] = ranked(self.pop[i])
    incoming[i] = {}
  end
  for _, e in ipairs(edges(self)) do
    local from, to = e[1], e[2]
    for m = 1, min(self.count, #rows[from]) do
      local t = incoming[to]
      t[#t + 1] = { x = copy(rows[from][m]), f = vals[from][m] }
    end
  end
  for i = 1, self.k do
    local inc, R, F = incoming[i], rows[i], vals[i]
    table.sort(inc, by_f)
    for m = 1, min(self.count, #inc) do
      local slot = #R - m + 1
      if inc[m].f < F[slot] then R[slot], F[slot] = inc[m].x, inc[m].f end
    end
    self.pop[i] = { X = la.from_rows(R), F = F }
  end
  self.migrations = self.migrations + 1
end

--- The individuals to evaluate next.
function GA:ask()
  if self.pending then return self.pending_x end
  local owner, out = {}, {}
  local rng = self.rng
  local next_pop = {}
  if self.countiter == 0 then
    for isl = 1, self.k do
      local R = {}
      for _ = 1, self.N do
        local x = {}
        for i = 1, self.n do x[i] = rng:range(self.ilo[i], self.ihi[i]) end
        R[#R + 1] = x; owner[#owner + 1] = isl; out[#out + 1] = copy(x)
      end
      next_pop[isl] = { X = la.from_rows(R), F = {} }
    end
  else
    if self.k > 1 and self.countiter % self.every == 0 then migrate(self) end
    for isl = 1, self.k do
      local P = self.pop[isl]
      local Y, Fe, kids = K.ga_offspring(rng.g, P.X, P.F, self.N, self.elites, self.B,
                                         self.eta_c, self.pc, self.eta_m, self.pm)
      next_pop[isl] = { X = Y, F = Fe }
      for k = 1, #kids do out[#out + 1] = kids[k]; owner[#owner + 1] = isl end
    end
  end
  self.next_pop = next_pop
  self.pending, self.pending_x = owner, out
  return out
end

--- The values of the individuals the last ask() gave, in order.
function GA:tell(X, F)
  local owner = assert(self.pending, "ga: tell() without a pending ask()")
  if F == nil then F = X end
  la.check_values("ga", F, #owner)
  self.pending, self.pending_x = nil, nil
  self.countevals = self.countevals + #F
  local pops = self.next_pop
  for k = 1, #F do
    local P = pops[owner[k]]
    local row = #P.F + 1
    P.F[row] = F[k]
    if F[k] < self.best_f then self.best_f, self.best_x = F[k], K.rows(P.X, { row })[1] end
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
  local blocks = {}
  for isl = 1, self.k do blocks[#blocks + 1] = self.pop[isl] and self.pop[isl].X end
  return K.maxstd(blocks)
end

---------------------------------------------------------------------------
-- pd.minimize's GA (the contract: pd.optim.registry); its islands are its
-- own (M.new's islands and migration), not pd.optim.islands
---------------------------------------------------------------------------

local space = require "pd.optim.space"

M.algorithm = {
  make = function(S, spec, o, rng, budget, target)
    local opts = space.options(S, o)
    opts.rng, opts.budget, opts.target = rng, budget, target
    opts.popsize = spec.popsize or 25 * (spec.islands or 1)
    opts.islands = spec.islands or 1
    opts.migration = spec.migration
    return M.new(opts)
  end,

  restore = M.restore,

  -- no stopping point of its own
  default_budget = function(n) return 10000 * n end,
}

return M
