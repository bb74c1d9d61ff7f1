--- pd.optim.pso: particle swarm optimisation as SPSO-2011.
--
-- Follows M. Clerc, "Standard Particle Swarm Optimisation" (2012, the
-- SPSO-2011 reference C code and its description), as benchmarked in
-- M. Zambrano-Bigiarini, M. Clerc, R. Rojas, "Standard Particle Swarm
-- Optimisation 2011 at CEC-2013: a baseline for future PSO improvements",
-- IEEE CEC 2013:
--   * swarm of S = 40, inertia w = 1/(2 ln 2), attraction c = 1/2 + ln 2;
--   * adaptive random topology: every particle informs itself and K = 3
--     random others; the links are drawn again after every iteration in
--     which the best of the swarm did not improve;
--   * rotation-invariant move: the centre of gravity G = x + c (p + l - 2x)/3
--     (G = x + c (p - x)/2 when the particle is its own best informant),
--     x' a random point of the hypersphere around G of radius |G - x|
--     (direction uniform, radius uniform along the ray), v <- w v + x' - x,
--     x <- x + v;
--   * confinement: a coordinate outside the box is set on the bound and its
--     velocity becomes -0.5 v;
--   * asynchronous update: the swarm is moved `block` particles at a time in
--     a fixed order, each block seeing the bests the previous blocks found
--     (block = 1 is Clerc's code exactly; block = S moves the swarm
--     synchronously, one batch per iteration, the most parallel).  The
--     default, S/4 (10 of 40), keeps most of the asynchronous gain (bench:
--     as many evaluations as Clerc's code) with batches of 10 to evaluate
--     in parallel.
--
-- Ask and tell: X = o:ask() gives the positions to evaluate (a block);
-- o:tell(X, F) takes their values; o.countiter counts whole sweeps.
local la = require "pd.optim.la"
local K = la.kernels          -- pso_move, rows, maxstd (lua/optim.c)

local M = {}
local PSO = {}
PSO.__index = PSO
M.PSO = PSO

local log, huge, ceil = math.log, math.huge, math.ceil

--- opts: dim, lower/upper (the box; infinite sides allowed), init_lower /
-- init_upper (where particles start, default the box), popsize (S, 40),
-- w, c, K (3), block (particles per asynchronous step, default S/4), seed or
-- rng, budget, maxiter, target.
function M.new(opts)
  local n = assert(opts.dim, "pso: dim is required")
  local self = setmetatable({}, PSO)
  self.n = n
  self.S = opts.popsize or 40
  self.w = opts.w or 1 / (2 * log(2))
  self.c = opts.c or 0.5 + log(2)
  self.K = opts.K or 3
  self.block = math.min(opts.block or ceil(self.S / 4), self.S)
  self.rng = opts.rng or la.rng(opts.seed or 0)
  self.lower, self.upper, self.ilo, self.ihi = {}, {}, {}, {}
  for i = 1, n do
    self.lower[i] = opts.lower and opts.lower[i] or -huge
    self.upper[i] = opts.upper and opts.upper[i] or huge
    self.ilo[i] = opts.init_lower and opts.init_lower[i] or self.lower[i]
    self.ihi[i] = opts.init_upper and opts.init_upper[i] or self.upper[i]
    assert(self.ilo[i] > -huge and self.ihi[i] < huge, "pso: the initial range must be finite")
  end
  self.budget = opts.budget or huge
  self.maxiter = opts.maxiter or huge
  self.target = opts.target
  self.countiter, self.countevals = 0, 0
  self.best_f, self.best_x = huge, nil
  -- positions, velocities and personal bests: S x n arrays, one row a
  -- particle (moved by K.pso_move); fp: the personal bests' values
  self.x, self.v, self.p, self.fp = la.matrix(self.S, n), la.matrix(self.S, n), la.matrix(self.S, n), {}
  self.box = la.matrix(2, n)
  for i = 1, n do self.box:set(1, i, self.lower[i]); self.box:set(2, i, self.upper[i]) end
  local rng = self.rng
  for s = 1, self.S do
    for i = 1, n do
      local x = rng:range(self.ilo[i], self.ihi[i])
      self.x:set(s, i, x)
      self.v:set(s, i, rng:range(self.ilo[i] - x, self.ihi[i] - x))
    end
  end
  self.next = 0           -- 0: initial evaluation of the whole swarm pending
  self.improved = false
  return self
end

function M.restore(t)
  la.rng_restore(t.rng)
  return setmetatable(t, PSO)
end


local function new_links(self)
  local S, rng = self.S, self.rng
  local L = {}
  for s = 1, S do L[s] = { [s] = true } end
  for m = 1, S do
    for _ = 1, self.K do L[rng:int(S)][m] = true end
  end
  -- informants of s as a sorted list (m with a link m -> s)
  local inf = {}
  for s = 1, S do
    local t = {}
    for m = 1, S do if L[s][m] then t[#t + 1] = m end end
    inf[s] = t
  end
  self.informants = inf
end

-- Move particle s towards its own and its best informant's best (the
-- hypersphere move and confinement in C: K.pso_move).
local function move(self, s)
  local fp = self.fp
  local l, fl = s, fp[s]
  for _, m in ipairs(self.informants[s]) do
    if fp[m] < fl then l, fl = m, fp[m] end
  end
  K.pso_move(self.rng.g, self.x, self.v, self.p, s, l, self.box, self.c, self.w)
end

--- The positions to evaluate next: the whole swarm at first, then blocks.
function PSO:ask()
  if self.pending then return self.pending_x end
  local ids = {}
  if self.next == 0 then
    for s = 1, self.S do ids[s] = s end
  else
    local s = self.next
    for k = 1, self.block do
      if s > self.S then break end
      move(self, s)
      ids[k] = s
      s = s + 1
    end
  end
  local X = K.rows(self.x, ids)
  self.pending, self.pending_x = ids, X
  return X
end

--- The values of the points the last ask() gave, in order.
function PSO:tell(X, F)
  local ids = assert(self.pending, "pso: tell() without a pending ask()")
  if F == nil then F = X end
  la.check_values("pso", F, #ids)
  self.pending, self.pending_x = nil, nil
  self.countevals = self.countevals + #ids
  local first = self.next == 0
  for k = 1, #ids do
    local s, f = ids[k], F[k]
    if first or f < self.fp[s] then
      self.p:row(s):assign(self.x:row(s))
      self.fp[s] = f
    end
    if f < self.best_f then
      self.best_f, self.best_x = f, self.x:row(s):totable()
      self.improved = true
    end
  end
  if first then
    new_links(self)
    self.next, self.improved = 1, false
    self.countiter = self.countiter + 1
  else
    self.next = ids[#ids] + 1
    if self.next > self.S then           -- end of a sweep
      if not self.improved then new_links(self) end
      self.improved = false
      self.next = 1
      self.countiter = self.countiter + 1
    end
  end
  if self.target and self.best_f <= self.target then self.stop = "target"
  elseif self.countevals >= self.budget then self.stop = "budget"
  elseif self.countiter >= self.maxiter then self.stop = "maxiter" end
  return self.stop
end

function PSO:best() return self.best_x, self.best_f end

--- Spread of the swarm: the largest standard deviation of a coordinate of
-- the particles' best positions.
function PSO:spread()
  if not self.fp[1] then return 0 end
  return K.maxstd(self.p)
end

--- True when the last tell() ended a sweep of the swarm.
function PSO:sweep_done() return self.next == 1 end

--- Migrants for an island model: copies of the best `count` personal bests.
function PSO:emigrants(count)
  local idx = {}
  for s = 1, self.S do idx[s] = s end
  table.sort(idx, function(a, b) return self.fp[a] < self.fp[b] end)
  local out = {}
  for k = 1, math.min(count, self.S) do
    out[k] = { x = self.p:row(idx[k]):totable(), f = self.fp[idx[k]] }
  end
  return out
end

--- Take migrants: each replaces the personal best of the worst particles
-- when it is better.
function PSO:immigrate(list)
  local idx = {}
  for s = 1, self.S do idx[s] = s end
  table.sort(idx, function(a, b) return self.fp[a] > self.fp[b] end)
  for k = 1, math.min(#list, ceil(self.S)) do
    local s, m = idx[k], list[k]
    if m.f < self.fp[s] then
      for i = 1, self.n do self.p:set(s, i, m.x[i]); self.x:set(s, i, m.x[i]) end
      self.fp[s] = m.f
    end
  end
end

---------------------------------------------------------------------------
-- pd.minimize's PSO (the contract: pd.optim.registry)
---------------------------------------------------------------------------

local space = require "pd.optim.space"
local islands = require "pd.optim.islands"

M.algorithm = {
  make = function(S, spec, o, rng, budget, target)
    local opts = space.options(S, o)
    opts.rng, opts.popsize, opts.budget, opts.target = rng, spec.popsize, budget, target
    local k = spec.islands or 1
    if k <= 1 then return M.new(opts) end
    -- an archipelago of swarms, each with its own stream drawn from rng
    opts.popsize = spec.popsize and math.max(2, math.floor(spec.popsize / k)) or 40
    opts.budget, opts.target = nil, nil
    return islands.from_spec(spec, rng, budget, target, function(r)
      local o2 = {}
      for key, v in pairs(opts) do o2[key] = v end
      o2.rng = r
      return M.new(o2)
    end)
  end,

  restore = islands.restorer(M.restore),

  -- no stopping point of its own
  default_budget = function(n) return 10000 * n end,
}

return M
