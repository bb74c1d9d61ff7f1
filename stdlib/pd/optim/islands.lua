--- pd.optim.islands: the island model around any ask-and-tell optimiser
-- that can give and take migrants (PSO and CMA-ES here; the GA keeps its
-- islands inside, as its demes share one population object).
--
-- Follows the generalised island model of D. Izzo, M. Rucinski, F. Biscani,
-- "The generalized island model", in Parallel Architectures and Bioinspired
-- Algorithms, Springer 2012 (PaGMO's archipelago), as Playdoh ran its
-- optimisers on one island per node: k optimisers evolve apart; every
-- `every` iterations each island sends copies of its best `count` along the
-- edges of a topology ("ring": i -> i+1, "all", or a list of {from, to}),
-- and the receiving island takes them in (PSO: as personal bests of its
-- worst particles; CMA-ES: as samples of its next generation).  The
-- islands move in lockstep, so the run is the same whatever evaluates the
-- points.  An island whose optimiser stops (CMA-ES's tolerances) sits out
-- the rest of the run; the archipelago stops when all have.
--
-- An archipelago fulfils the optimiser contract of pd.optim.registry (ask,
-- tell, best, spread, countiter, stop, migrations); an algorithm whose
-- optimisers also give and take migrants (emigrants, immigrate) runs as
-- islands by making them with M.from_spec and restoring with M.restorer.
local la = require "pd.optim.la"

local M = {}
local Arch = {}
Arch.__index = Arch
M.Arch = Arch

local huge = math.huge

--- members: a list of optimisers (same kind, same batch shape); opts:
-- every (20), count (1), topology ("ring"), budget, maxiter, target.
function M.new(members, opts)
  local self = setmetatable({ members = members }, Arch)
  self.every = opts.every or 20
  self.count = opts.count or 1
  self.topology = opts.topology or "ring"
  self.budget = opts.budget or huge
  self.maxiter = opts.maxiter or huge
  self.target = opts.target
  self.countiter, self.countevals = 0, 0
  self.migrations = 0
  return self
end

--- Re-attach methods after a checkpoint; `restore` restores one member.
function M.restore(t, restore)
  for _, m in ipairs(t.members) do restore(m) end
  return setmetatable(t, Arch)
end

--- An archipelago of spec.islands optimisers: member(rng) makes one on
-- its own stream, drawn from rng (so its own start); migration as
-- spec.migration says (every, count = 1, topology); budget and target are
-- the archipelago's limits (members have none).
function M.from_spec(spec, rng, budget, target, member)
  local members = {}
  for i = 1, spec.islands do members[i] = member(la.rng(rng:int(2147483647), i)) end
  local mig = spec.migration or {}
  return M.new(members, { every = mig.every, count = mig.count or 1,
                          topology = mig.topology, budget = budget, target = target })
end

--- The restore of an algorithm that may run as islands, from `restore`,
-- its optimisers' own: an archipelago (t.members) is restored member by
-- member.
function M.restorer(restore)
  return function(t)
    if t.members then return M.restore(t, restore) end
    return restore(t)
  end
end

local function edges(self)
  local k, t = #self.members, self.topology
  if type(t) == "table" then return t end
  local e = {}
  if t == "all" then
    for i = 1, k do for j = 1, k do if i ~= j then e[#e + 1] = { i, j } end end end
  else
    for i = 1, k do e[#e + 1] = { i, i % k + 1 } end
  end
  return e
end

--- The points of every island, one after the other.
function Arch:ask()
  if self.pending then return self.pending_x end
  local X, slices = {}, {}
  for i, m in ipairs(self.members) do
    if not m.stop then
      local Xi = m:ask()
      slices[i] = { #X + 1, #X + #Xi }
      for k = 1, #Xi do X[#X + 1] = Xi[k] end
    end
  end
  self.pending, self.pending_x = slices, X
  return X
end

--- Their values, in the same order; migrates at the end of every
-- `every`-th iteration.
function Arch:tell(X, F)
  local slices = assert(self.pending, "islands: tell() without a pending ask()")
  if F == nil then F = X end
  self.pending, self.pending_x = nil, nil
  local progressed, last_stop = false, nil
  for i, m in ipairs(self.members) do
    if slices[i] then
      local a, b = slices[i][1], slices[i][2]
      local Fi = {}
      for k = a, b do Fi[#Fi + 1] = F[k] end
      local before = m.countiter
      m:tell(nil, Fi)
      if m.countiter > before then progressed = true end
      if m.stop then last_stop = m.stop end
    end
  end
  self.countevals = self.countevals + #F
  if progressed then self.countiter = self.countiter + 1 end
  if progressed and #self.members > 1 and self.countiter % self.every == 0 then
    local out = {}
    for i, m in ipairs(self.members) do out[i] = m:emigrants(self.count) end
    local incoming = {}
    for _, e in ipairs(edges(self)) do
      local t = incoming[e[2]] or {}
      incoming[e[2]] = t
      for _, mig in ipairs(out[e[1]]) do t[#t + 1] = { x = mig.x, f = mig.f } end
    end
    for i, m in ipairs(self.members) do
      local t = incoming[i]
      if t and not m.stop then
        table.sort(t, function(p, q) return p.f < q.f end)
        local keep = {}
        for k = 1, math.min(self.count, #t) do keep[k] = t[k] end
        m:immigrate(keep)
      end
    end
    self.migrations = self.migrations + 1
  end
  local live = false
  for _, m in ipairs(self.members) do if not m.stop then live = true end end
  local _, bf = self:best()
  if self.target and bf <= self.target then self.stop = "target"
  elseif self.countevals >= self.budget then self.stop = "budget"
  elseif self.countiter >= self.maxiter then self.stop = "maxiter"
  elseif not live then self.stop = last_stop or self.members[#self.members].stop end
  return self.stop
end

--- The best point over all islands.
function Arch:best()
  local bx, bf = nil, huge
  for _, m in ipairs(self.members) do
    local x, f = m:best()
    if f < bf then bx, bf = x, f end
  end
  return bx, bf
end

--- The largest spread of an island.
function Arch:spread()
  local s = 0
  for _, m in ipairs(self.members) do s = math.max(s, m:spread()) end
  return s
end

return M
