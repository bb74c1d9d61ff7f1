--- bench/optim/speedup.lua: the goal "with a 1 ms fitness, 2 workers give
-- at least 1.8x the evaluations per second of 1" (figures:
-- docs/optimisation.md, "How good: the bench").  A CPU-bound fitness calibrated to `ms`
-- milliseconds (default 1), CMA-ES with lambda = 10, 20 and 40; for each,
-- the evaluations per second in the coordinator alone (serial) and with
-- pd.minimize spreading every generation over P = 1 .. workers worker
-- processes, and the ratio to P = 1 (ideal: lambda / ceil(lambda / P), 2
-- for P = 2 and even lambda).  Wall-clock time; "best" is the ratio of the
-- best rates of `reps` runs, "median" the median of each repetition's own
-- ratio, and "machine" the same ratio for k plain processes running the
-- busy loop with no coordinator (measured next to each repetition: a VM's
-- host, or another job, takes from P = 2 first, and this shows how much).
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

-- The machine's own ceiling, measured next to each repetition: k plain
-- pdlua processes (no coordinator, no messages) run the same busy loop for
-- `secs` seconds each; their evaluations per second summed.  On a machine
-- with k free cores, k processes give k times one; a host that takes time
-- from its VM (or another job) shows here first.
local exe = core.exe()
local function plain(k, secs)
  local script = string.format([[
local now = require("pd.core").now
local function spin(n) local s = 0.0 for k = 1, n do s = s + math.sin(k) end return s end
local c, t0 = 0, now()
repeat spin(%d); c = c + 1 until now() - t0 >= %g
io.write(c / (now() - t0))]], n, secs)
  local hs = {}
  for i = 1, k do hs[i] = assert(io.popen(exe .. " -e '" .. script .. "'")) end
  local sum = 0
  for i = 1, k do
    sum = sum + assert(tonumber(hs[i]:read("a")), "plain worker failed")
    hs[i]:close()
  end
  return sum
end

local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local m = #s
  if m == 0 then return 0 / 0 end
  return m % 2 == 1 and s[(m + 1) / 2] or 0.5 * (s[m / 2] + s[m / 2 + 1])
end

print(string.format("fitness %.2f ms, %s, %d iterations, %d repetitions", ms, pd.vm, iters, reps))
print("ratio: evaluations per second over P = 1, best of the repetitions and the median of each")
print("repetition's own ratio; machine: k plain processes over 1, measured next to each repetition")
print(string.format("%6s %8s %10s %8s %8s %8s %8s", "lambda", "workers", "evals/s", "best", "median",
  "machine", "ideal"))
local all_ratio, all_machine = {}, {}
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
    c.best, c.rates, c.machine = 0, {}, {}
  end
  local secs = lam * iters * ms / 1000 / workers    -- as long as a P = workers run
  for rep = 1, reps do
    for _, c in ipairs(configs) do
      local eps, r = rate(c.spec)
      assert(r.f == serial.f, "parallel result differs from serial")
      if eps > c.best then c.best = eps end
      c.rates[rep] = eps
    end
    local alone = plain(1, secs)
    for _, c in ipairs(configs) do
      if c.P then c.machine[rep] = c.P == 1 and 1 or plain(c.P, secs) / alone end
    end
  end
  local one = configs[2]
  for _, c in ipairs(configs) do
    if c.P then
      local ratios = {}
      for rep = 1, reps do ratios[rep] = c.rates[rep] / one.rates[rep] end
      if c.P == workers then
        for rep = 1, reps do
          all_ratio[#all_ratio + 1] = ratios[rep]
          all_machine[#all_machine + 1] = c.machine[rep]
        end
      end
      print(string.format("%6d %8d %10.1f %8.2f %8.2f %8s %8.2f", lam, c.P, c.best, c.best / one.best,
        median(ratios), c.P == 1 and "" or string.format("%.2f", median(c.machine)),
        lam / math.ceil(lam / c.P)))
    else
      print(string.format("%6d %8s %10.1f", lam, "serial", c.best))
    end
  end
end
-- the repetitions in which the machine itself gave `workers` whole cores
local full = {}
for i, m in ipairs(all_machine) do
  if m >= 0.95 * workers then full[#full + 1] = all_ratio[i] end
end
print(string.format("P = %d over P = 1, median over all repetitions: %.2f (machine %.2f); in the %d of %d " ..
  "where the machine gave %d whole cores (>= %.2f): %.2f", workers, median(all_ratio), median(all_machine),
  #full, #all_ratio, workers, 0.95 * workers, median(full)))
