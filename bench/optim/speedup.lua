--- bench/optim/speedup.lua: wall-clock speedup of pd.minimize's parallel
-- evaluation (research/optim.md 5.4 item 4): a CPU-bound fitness of about
-- 10 ms, CMA-ES with lambda = 10 and 20, 15 iterations, serial against
-- 1 and 2 workers.  The ideal is lambda / ceil(lambda / P).
--
--   build/pdlua run bench/optim/speedup.lua [--ms 10] [--workers 2]
local pd = require "pd"
local core = require "pd.core"

local ms, workers = 10, 2
for i = 1, #arg do
  if arg[i] == "--ms" then ms = tonumber(arg[i + 1]) end
  if arg[i] == "--workers" then workers = tonumber(arg[i + 1]) end
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

print(string.format("fitness %.1f ms, %s", ms, pd.vm))
print(string.format("%6s %8s %8s %8s %8s", "lambda", "workers", "wall s", "speedup", "ideal"))
for _, lam in ipairs { 10, 20 } do
  local spec = { dim = 10, bounds = { -5, 5 }, popsize = lam, maxiter = 15, seed = 1 }
  local t0 = core.now()
  local serial = pd.minimize(fitness, spec)
  local ts = core.now() - t0
  print(string.format("%6d %8s %8.2f %8.2f %8.2f", lam, "serial", ts, 1, 1))
  for P = 1, workers do
    spec.parallel, spec.cpus = true, P
    pd.minimize(fitness, spec)                    -- warm the workers
    t0 = core.now()
    local r = pd.minimize(fitness, spec)
    local tp = core.now() - t0
    assert(r.f == serial.f, "parallel result differs from serial")
    print(string.format("%6d %8d %8.2f %8.2f %8.2f", lam, P, tp, ts / tp, lam / math.ceil(lam / P)))
  end
end
