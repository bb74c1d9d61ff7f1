--- bench/optim/speedup.lua: the goal of issue 7, "with a 1 ms fitness, 2
-- workers give at least 1.8x the evaluations per second of 1"
-- (research/optim.md 5.4 item 4).  A CPU-bound fitness calibrated to `ms`
-- milliseconds (default 1), CMA-ES with lambda = 10, 20 and 40; for each,
-- the evaluations per second in the coordinator alone (serial) and with
-- pd.minimize spreading every generation over P = 1 .. workers worker
-- processes, and the ratio to P = 1 (ideal: lambda / ceil(lambda / P), 2
-- for P = 2 and even lambda).  Each figure is the best of `reps` runs (the
-- machine may be shared), with wall-clock time; on a 2-core machine
-- anything else running takes from P = 2 first.
--
--   build/pdlua run bench/optim/speedup.lua [--ms 1] [--workers 2] [--iters 40] [--reps 3]
--       [--chunk N]   (spec.chunk: points per message; default pd.map's adaptive batches)
local pd = require "pd"
local core = require "pd.core"

local ms, workers, iters, reps, chunk = 1, 2, 40, 3, nil
for i = 1, #arg do
  if arg[i] == "--ms" then ms = tonumber(arg[i + 1]) end
  if arg[i] == "--workers" then workers = tonumber(arg[i + 1]) end
  if arg[i] == "--iters" then iters = tonumber(arg[i + 1]) end
  if arg[i] == "--reps" then reps = tonumber(arg[i + 1]) end
  if arg[i] == "--chunk" then chunk = tonumber(arg[i + 1]) end
end

-- Calibrate a busy loop to `ms` milliseconds of CPU.
local function spin(n)
  local s = 0.0
  for k = 1, n do s = s + math.sin(k) end
  return s
end
local n = 100000
while true do
  local t0 = os.clock(); spin(n); local dt = os.clock() - t0
  if dt > 0.05 then n = math.floor(n * (ms / 1000) / dt); break end
  n = n * 2
end
local function fitness(x)
  local s = spin(n) * 0
  for i = 1, #x do s = s + x[i] * x[i] end
  return s
end

-- Evaluations per second of one pd.minimize(fitness, spec).
local function rate(spec)
  local t0 = core.now()
  local r = pd.minimize(fitness, spec)
  return r.evaluations / (core.now() - t0), r
end

print(string.format("fitness %.2f ms, %s, %d iterations, best of %d", ms, pd.vm, iters, reps))
print(string.format("%6s %8s %10s %10s %8s", "lambda", "workers", "evals/s", "vs P=1", "ideal"))
for _, lam in ipairs { 10, 20, 40 } do
  local spec = { dim = 10, bounds = { -5, 5 }, popsize = lam, maxiter = iters, seed = 1, chunk = chunk }
  local serial = pd.minimize(fitness, spec)
  -- the configurations measured in turn, rep after rep, so that a change
  -- in the machine's load or clock falls on all of them alike
  local configs = { { name = "serial" } }
  for P = 1, workers do configs[#configs + 1] = { P = P } end
  for _, c in ipairs(configs) do
    c.spec = {}
    for k, v in pairs(spec) do c.spec[k] = v end
    if c.P then
      c.spec.parallel, c.spec.cpus = true, c.P
      pd.minimize(fitness, c.spec)                -- start the workers
    end
    c.best = 0
  end
  for _ = 1, reps do
    for _, c in ipairs(configs) do
      local eps, r = rate(c.spec)
      assert(r.f == serial.f, "parallel result differs from serial")
      if eps > c.best then c.best = eps end
    end
  end
  local one = configs[2] and configs[2].best
  for _, c in ipairs(configs) do
    if c.P then
      print(string.format("%6d %8d %10.1f %10.2f %8.2f", lam, c.P, c.best, c.best / one,
        lam / math.ceil(lam / c.P)))
    else
      print(string.format("%6d %8s %10.1f %10s %8s", lam, "serial", c.best, "", ""))
    end
  end
end
