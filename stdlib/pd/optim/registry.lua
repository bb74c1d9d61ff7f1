--- pd.optim.registry: the optimisers pd.minimize knows, by name, and the
-- contract each one fulfils.  This comment is the one place it is written.
--
-- An algorithm is a table registered under its name (spec.algorithm):
--
--   make(S, spec, o, rng, budget, target) -> optimiser       (required)
--       A new optimiser for the search space S (pd.optim.space: n, names,
--       lo, hi, ilo, ihi).  spec is the user's spec (popsize, islands,
--       migration, ...), o the group's options (M.options), rng the group's
--       stream (pd.optim.la.rng: every random draw of the run comes from
--       it, so a seed gives the same run wherever the points are
--       evaluated), budget and target its limits (nil or math.huge: none).
--       It also makes pd.optim.<name>{...}, the ask-and-tell constructor.
--   restore(t) -> optimiser                                  (required)
--       Re-attach the methods to an optimiser read back from a checkpoint
--       (the same table, as plain data; pd.optim.la's matrices and
--       generators come back as such, generators to be la.rng_restore'd).
--   default_budget(n) -> evaluations                         (optional)
--       The budget of a run whose spec gives neither budget nor maxiter,
--       for an optimiser that does not stop by itself; none: it does.
--   start(g, spec)                                           (optional)
--       Once a group g is made (g.algo is its first optimiser): set up the
--       group's own fields for the hooks below (plain data: they are
--       checkpointed with g).
--   finish(g, run)                                           (optional)
--       Once g.algo has stopped by its own criteria (g.algo.stop), before
--       any restart: last evaluations, through run.evaluate(points) ->
--       values (counted in the group's evaluations, its best kept).
--   restart(g, run) -> true | false                          (optional)
--       After finish: put a new run's optimiser in g.algo and return true
--       (the group goes on, g.runs counts it), or false (the group is done,
--       g.algo.stop says why).
--   Hooks get g, the driver's group: kind, index, algo, evals, iter,
--   best_f, best_x, runs, history, and the fields start set; and run:
--   S, spec (budget and target filled in), options() (the group's o),
--   target, budget_left (evaluations), evaluate(points).
--
-- An optimiser (what make returns) is plain data with a metatable, which
-- a checkpoint writes (numbers, strings, booleans, tables no two fields
-- share, la's matrices and generators; no functions):
--   o:ask() -> X          the points to evaluate next (lists of n numbers);
--                         asked again before tell, the same points; a
--                         batch may be part of an iteration (PSO's blocks)
--   o:tell(X, F)          the values of the points the last ask gave, in
--                         order (smaller is better); X may be nil
--   o:best() -> x, f      the best point seen so far and its value
--   o:spread() -> s       the search's own scale (progress, history)
--   o.countiter           iterations completed: the driver counts one
--                         when it grows (history entry, progress line)
--   o.stop                nil while it goes on, else why it stopped (a
--                         string: "tolfun", "budget", ...)
--   o.maxiter             its own iteration limit (the ask-and-tell
--                         constructors set spec.maxiter there)
--   o.migrations          optional: migrations so far (islands; history)
-- To run as islands (pd.optim.islands, spec.islands > 1), its make builds
-- the archipelago with islands.from_spec, its restore is
-- islands.restorer(...), and its optimisers also give and take migrants:
--   o:emigrants(count) -> {{x =, f =}, ...}   copies of its best
--   o:immigrate(list)    take them in (into the next ask)
--
-- Adding an algorithm: write stdlib/pd/optim/NAME.lua whose module table
-- has `algorithm` (the table above), and add NAME to BUILTIN below; or,
-- from outside the stdlib, pd.optim.registry.register(NAME, algorithm).
-- Built-in modules load on first use, so `require "pd.optim"` is cheap.
local M = {}

-- The built-in algorithms, in the order the error message lists them:
-- pd.optim.NAME's `algorithm`, required the first time NAME is looked up.
local BUILTIN = { "cmaes", "pso", "ga" }

local registered = {}
local order = {}
for i, name in ipairs(BUILTIN) do order[i] = name end

--- Register `alg` under `name` (replacing a previous one).
function M.register(name, alg)
  assert(type(name) == "string", "pd.optim.registry: a name must be a string")
  assert(type(alg) == "table" and type(alg.make) == "function" and type(alg.restore) == "function",
         "pd.optim.registry: an algorithm needs make and restore")
  local known = registered[name] ~= nil
  for _, b in ipairs(BUILTIN) do if b == name then known = true end end
  if not known then order[#order + 1] = name end
  registered[name] = alg
end

--- The names known, built-in first: a list.
function M.names()
  local t = {}
  for i, name in ipairs(order) do t[i] = name end
  return t
end

--- The algorithm registered as `name`, or nil and the message
-- "unknown algorithm 'NAME' (cmaes, pso, ga)".
function M.get(name)
  local alg = registered[name]
  if alg then return alg end
  for _, b in ipairs(BUILTIN) do
    if b == name then
      alg = require("pd.optim." .. name).algorithm
      registered[name] = alg
      return alg
    end
  end
  return nil, "unknown algorithm '" .. tostring(name) .. "' (" .. table.concat(order, ", ") .. ")"
end

--- The options of group gi: spec.options, or with one table per group
-- (options = {{...}, {...}}, Playdoh's per-group optparams) the gi-th.
function M.options(spec, gi)
  local o = spec.options or {}
  if type(o[1]) == "table" then
    o = o[gi or 1]
    if not o then error("pd.optim: options has no entry for group " .. tostring(gi), 4) end
  end
  return o
end

--- A new optimiser of algorithm `name` from a spec (see make above) for
-- group gi (nil: the ask-and-tell constructors).
function M.make(name, S, spec, rng, budget, target, gi)
  local o = M.options(spec, gi)
  local alg, why = M.get(name)
  if not alg then error("pd.optim: " .. why, 3) end
  return alg.make(S, spec, o, rng, budget, target)
end

return M
