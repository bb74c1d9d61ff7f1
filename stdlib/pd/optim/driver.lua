--- pd.optim.driver: the run behind pd.minimize and pd.maximize.
--
-- The driver of Playdoh's optimisation (C. Rossant, B. Fontaine,
-- D. F. M. Goodman, "Playdoh: a lightweight Python library for distributed
-- computing and optimisation", J. Comput. Science 4, 2013), rebuilt around
-- ask-and-tell optimisers (pd.optim.registry: the algorithms and the
-- contract they fulfil).  A run is `groups` independent fits (Playdoh's
-- groups), each an optimiser of spec.algorithm on its own stream (group g:
-- seed + g - 1).  Every iteration the driver asks each live group for its
-- points, evaluates them all in one batch (pd.optim.evaluate: the place
-- where the batch is spread over workers) and tells each group its values.
-- The optimisers' random streams live here, in the coordinator, so a seed
-- gives the same result whatever evaluates the points.  A group stops at
-- the run's limits (target, budget, maxiter) or when its optimiser stops
-- itself, once the algorithm's finish and restart hooks have had their
-- say (settle).  After every iteration the state may be checkpointed
-- (pd.optim.checkpoint); a resumed run gives the numbers of one never
-- stopped.  The result has the best group's x and f, every group's, and
-- the histories.  See docs/optimisation.md.
local la = require "pd.optim.la"
local registry = require "pd.optim.registry"
local space = require "pd.optim.space"
local evaluate = require "pd.optim.evaluate"
local checkpoint = require "pd.optim.checkpoint"

local M = {}

local huge, min, max = math.huge, math.min, math.max

-- A new run's state: its groups, each with its first optimiser.
local function new_state(spec, S, kind, alg, seed, groups)
  local state = { version = 1, kind = kind, n = S.n, seed = seed, groups = {},
                  evaluations = 0, rounds = 0, history = {} }
  local budget = spec.budget or huge
  local target = spec.target
  for gi = 1, groups do
    local rng = la.rng(seed + gi - 1, 1)   -- group g: the run of seed + g - 1
    local g = { kind = kind, index = gi, evals = 0, iter = 0, best_f = huge, history = {},
                runs = 1 }
    g.algo = registry.make(kind, S, spec, rng, budget, target, gi)
    if alg.start then alg.start(g, spec) end
    state.groups[gi] = g
  end
  return state
end

-- Ask every live group: the batch (all their points), the group of each
-- point (nil for one group), and per group {first, last, its points}.
local function ask_all(groups)
  local points, owner, slices = {}, #groups > 1 and {} or nil, {}
  if #groups == 1 then
    local g = groups[1]
    if not g.done then
      points = g.algo:ask()        -- the batch is the one group's points
      slices[1] = { 1, #points, points }
    end
  else
    for gi, g in ipairs(groups) do
      if not g.done then
        local X = g.algo:ask()
        local a = #points + 1
        for k = 1, #X do
          points[#points + 1] = X[k]
          owner[#owner + 1] = gi
        end
        slices[gi] = { a, #points, X }
      end
    end
  end
  return points, owner, slices
end

-- The result of a finished run: every group's, and the best group's x, f,
-- stop, runs and migrations at the top.
local function result(state, S, kind, sign)
  local r = { evaluations = state.evaluations, seed = state.seed, history = state.history,
              algorithm = kind, groups = {} }
  local best
  for gi, g in ipairs(state.groups) do
    local gr = { x = space.decode(S, g.best_x), f = sign * g.best_f, evaluations = g.evals,
                 iterations = g.iter, stop = g.stop, history = g.history, runs = g.runs,
                 migrations = g.algo.migrations }
    r.groups[gi] = gr
    if not best or g.best_f < state.groups[best].best_f then best = gi end
  end
  local b = r.groups[best]
  r.x, r.f, r.stop, r.runs, r.migrations = b.x, b.f, b.stop, b.runs, b.migrations
  r.iterations = 0
  for _, g in ipairs(r.groups) do r.iterations = max(r.iterations, g.iterations) end
  if #state.groups == 1 then r.history = r.groups[1].history end
  r.names = S.names
  return r
end

--- Run an optimisation: minimise sign * f over spec's space (sign = -1:
-- maximise f, whose own values the result reports).  Misuse raises at
-- level 3, the caller of the protected call around it (pd.optim).
function M.run(f, spec, sign)
  if type(f) ~= "function" and not (getmetatable(f) and getmetatable(f).__call) then
    error("pd.minimize: the fitness must be a function", 3)
  end
  if type(spec) ~= "table" then error("pd.minimize: the second argument must be a spec table", 3) end
  local S = space.parse(spec)
  local kind = spec.algorithm or "cmaes"
  local alg, unknown = registry.get(kind)
  if not alg then error("pd.minimize: " .. unknown, 3) end
  local ngroups = spec.groups or 1
  local budget = spec.budget
  local maxiter = spec.maxiter
  if alg.default_budget and not budget and not maxiter then budget = alg.default_budget(S.n) end
  budget = budget or huge
  maxiter = maxiter or huge
  local target = spec.target
  if target and sign < 0 then target = -target end
  local inner = {}
  for k, v in pairs(spec) do inner[k] = v end
  inner.budget, inner.target = budget, target

  -- the command line's options (--seed, --cpus, --nodes, --discover)
  local popts
  do
    local ok, core = pcall(require, "pd.core")
    popts = ok and core.options and core.options() or {}
  end
  local seed = spec.seed
  if seed == nil then seed = popts.seed or (os.time() % 1000000) end

  local ckpt = spec.checkpoint
  local resume = spec.resume
  if resume == true then resume = ckpt end
  local state, resumed
  if resume then
    state = checkpoint.load(resume)
    if state then
      if state.kind ~= kind or state.n ~= S.n or #state.groups ~= ngroups then
        error("pd.minimize: checkpoint " .. resume .. " is for another problem", 3)
      end
      for _, g in ipairs(state.groups) do alg.restore(g.algo) end
      resumed = true
    end
  end
  ckpt = ckpt or (type(spec.resume) == "string" and spec.resume) or nil
  if not state then
    state = new_state(inner, S, kind, alg, seed, ngroups)
    if ckpt then os.remove(ckpt .. ".hist") end
  end

  local ctx = evaluate.context(spec, S, popts)
  local progress = spec.progress
  local out = type(progress) == "function" and progress or function(line) io.stderr:write(line, "\n") end

  -- What the algorithm's hooks get for group g (pd.optim.registry); the
  -- points they evaluate count as the group's, and its best is kept.
  local function hook_run(gi, g)
    local run = { S = S, spec = inner, target = target }
    function run.options() return registry.options(inner, g.index) end
    function run.evaluate(points)
      local ctx1 = ctx
      if ngroups > 1 then
        local owner = {}
        for k = 1, #points do owner[k] = gi end
        ctx1 = setmetatable({ groups = owner }, { __index = ctx })
      end
      local values = evaluate.evaluate(f, points, ctx1)
      for k = 1, #values do
        local v = sign * values[k]
        values[k] = v
        state.evaluations, g.evals = state.evaluations + 1, g.evals + 1
        if v < g.best_f then g.best_f, g.best_x = v, points[k] end
      end
      return values
    end
    return run
  end

  -- Why group g stops after its iteration (nil: it goes on).  When its
  -- optimiser stops itself, the algorithm may evaluate a last point or
  -- more (finish: CMA-ES's final mean) and start a new run (restart:
  -- CMA-ES's IPOP and BIPOP) while restarts are left.
  local function settle(gi, g)
    if target and g.best_f <= target then return "target" end
    if g.evals >= budget then return "budget" end
    if g.iter >= maxiter then return "maxiter" end
    if not g.algo.stop then return nil end
    local run = hook_run(gi, g)
    if alg.finish then alg.finish(g, run) end
    if target and g.best_f <= target then return "target" end
    run.budget_left = budget - g.evals
    if alg.restart and alg.restart(g, run) then
      g.runs = g.runs + 1
      return nil
    end
    return g.algo.stop
  end

  -- A finished run resumed with a larger maxiter goes on: its groups that
  -- maxiter stopped are settled again under the new limit, as a run given
  -- that maxiter from the start would have been at that iteration.
  if resumed then
    local reopened = false
    for gi, g in ipairs(state.groups) do
      if g.done and g.stop == "maxiter" and g.iter < maxiter then
        g.done, g.stop = false, nil
        local why = settle(gi, g)
        if why then g.done, g.stop = true, why end
        reopened = true
      end
    end
    if reopened and ckpt then checkpoint.save(ckpt, state) end
  end

  while true do
    local points, owner, slices = ask_all(state.groups)
    if #points == 0 then break end
    ctx.groups = owner
    local values = evaluate.evaluate(f, points, ctx)
    state.evaluations = state.evaluations + #values
    state.rounds = state.rounds + 1
    local round_best, round_scale, completed = huge, 0.0, false
    for gi, g in ipairs(state.groups) do
      local sl = slices[gi]
      if sl then
        local F = values
        if sl[1] ~= 1 or sl[2] ~= #values or sign ~= 1 then
          F = {}
          for k = sl[1], sl[2] do F[#F + 1] = sign * values[k] end
        end
        -- the values of the iteration so far (PSO tells a sweep in blocks)
        local sum = g.sum or 0.0
        for k = 1, #F do sum = sum + F[k] end
        g.sum = sum
        g.count = (g.count or 0) + #F
        local before = g.algo.countiter
        g.algo:tell(sl[3], F)
        g.evals = g.evals + #F
        local bx, bf = g.algo:best()
        if bf < g.best_f then g.best_f, g.best_x = bf, la.copy(bx) end
        if g.algo.countiter > before then
          g.iter = g.iter + 1
          local mean = g.sum / g.count
          state.sum, state.count = (state.sum or 0.0) + g.sum, (state.count or 0) + g.count
          g.sum, g.count = 0.0, 0
          local scale = g.algo:spread()
          g.history[#g.history + 1] = { iteration = g.iter, evaluations = g.evals,
            best = sign * g.best_f, mean = sign * mean, scale = scale,
            migrations = g.algo.migrations }   -- islands: migrations so far
          round_scale = max(round_scale, scale)
          completed = true
        end
        local why = settle(gi, g)              -- (its hooks may evaluate more)
        round_best = min(round_best, g.best_f)
        if why then g.done, g.stop = true, why end
      end
    end
    if completed then   -- one entry (and progress line) per iteration
      local hist = state.history
      state.iteration = (state.iteration or 0) + 1
      if ngroups > 1 then   -- one group: the result's history is the group's
        hist[#hist + 1] = { iteration = state.iteration, evaluations = state.evaluations,
                            best = sign * round_best, mean = sign * state.sum / state.count,
                            scale = round_scale }
      end
      state.sum, state.count = 0.0, 0
      if progress then
        out(string.format("optim %s  iter %d  evals %d  best %.6g  spread %.3g",
          kind, state.iteration, state.evaluations, sign * round_best, round_scale))
      end
    end
    if ckpt then checkpoint.save(ckpt, state) end
  end

  return result(state, S, kind, sign)
end

return M
