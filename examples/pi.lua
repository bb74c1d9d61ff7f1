-- examples/pi.lua: Monte Carlo estimate of pi (Metropolis and Ulam, "The
-- Monte Carlo Method", J. Amer. Statist. Assoc. 44, 1949): throw points in
-- the unit square, count those inside the quarter circle.
--
--   pdlua run examples/pi.lua [points] --cpus 8 --seed 1
--
-- Each task draws from pd.rng(), its own stream fixed by the job's seed and
-- the task's index, so the estimate is the same whatever --cpus is.
local pd = require "pd"
local now = require("pd.core").now

local points = tonumber(arg and arg[1]) or 4e6
local tasks = 64
local per = math.floor(points / tasks)

local function throw(n)
  local g = pd.rng()
  local inside = 0
  for _ = 1, n do
    local x, y = g:uniform(), g:uniform()
    if x * x + y * y < 1 then inside = inside + 1 end
  end
  return inside
end

local counts = {}
for i = 1, tasks do counts[i] = per end

local t0 = now()
local inside = pd.map(throw, counts, { seed = tonumber(pd.options().seed) or 2024 })
local elapsed = now() - t0

local total = 0
for i = 1, inside.n do total = total + inside[i] end
local estimate = 4 * total / (per * tasks)
print(string.format("pi ~ %.6f (error %.2e) from %d points in %d tasks: %.3f s, %.1f M points/s",
                    estimate, math.abs(estimate - math.pi), per * tasks, tasks, elapsed,
                    per * tasks / elapsed / 1e6))
