-- rastrigin_islands.lua: the island model of a genetic algorithm on the
-- 10-D Rastrigin function (L. A. Rastrigin, 1974; the island model as in
-- Playdoh and in D. Izzo et al., "The generalized island model", 2012).
-- Four islands of 25 on a ring, the best 3 migrating every 20 generations,
-- against one panmictic population of 100, on the same budget.
--
--   build/pdlua run examples/rastrigin_islands.lua [--cpus N]
local pd = require "pd"

local function rastrigin(x)
  local s = 10 * #x
  for i = 1, #x do s = s + x[i] ^ 2 - 10 * math.cos(2 * math.pi * x[i]) end
  return s
end

local base = { algorithm = "ga", dim = 10, bounds = { -5.12, 5.12 }, budget = 50000, seed = 1 }

local function run(extra)
  local spec = {}
  for k, v in pairs(base) do spec[k] = v end
  for k, v in pairs(extra) do spec[k] = v end
  return pd.minimize(rastrigin, spec)
end

local one = run { popsize = 100 }
local ring = run { popsize = 100, islands = 4, migration = { every = 20, count = 3, topology = "ring" } }
local all = run { popsize = 100, islands = 4, migration = { every = 20, count = 3, topology = "all" } }

print(string.format("%-26s %12s %8s", "configuration", "best f", "evals"))
print(string.format("%-26s %12.3g %8d", "panmictic, 100", one.f, one.evaluations))
print(string.format("%-26s %12.3g %8d", "4 islands x 25, ring", ring.f, ring.evaluations))
print(string.format("%-26s %12.3g %8d", "4 islands x 25, all", all.f, all.evaluations))
-- reading the history: best value every 100 generations of the ring run
for i = 100, #ring.history, 100 do
  local h = ring.history[i]
  print(string.format("  generation %4d  evals %6d  best %10.3g  spread %8.3g", h.iteration, h.evaluations, h.best, h.scale))
end
