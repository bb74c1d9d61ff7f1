-- examples/sweep.lua: a parameter sweep of a small ODE model, the
-- Lotka-Volterra predator-prey system (Lotka 1925, Volterra 1926):
--
--   dx/dt = a x - b x y        (prey)
--   dy/dt = d x y - c y        (predators)
--
-- integrated with classical Runge-Kutta (RK4) for each (a, c) on a grid;
-- each task returns the peak predator count and the period of the cycle.
--
--   pdlua run examples/sweep.lua [grid] --cpus 8
local pd = require "pd"
local now = require("pd.core").now

local grid = tonumber(arg and arg[1]) or 12
local b, d = 0.02, 0.01
local x0, y0, dt, steps = 40.0, 9.0, 0.01, 20000

-- One model run; a, c are the sweep's parameters (b, d, x0, ... travel as
-- upvalues, once per worker).
local function simulate(a, c)
  local function f(x, y) return a * x - b * x * y, d * x * y - c * y end
  local x, y, t = x0, y0, 0.0
  local peak, last_peak_t, period = y, nil, nil
  local prev, rising = y, true
  for _ = 1, steps do
    local k1x, k1y = f(x, y)
    local k2x, k2y = f(x + dt / 2 * k1x, y + dt / 2 * k1y)
    local k3x, k3y = f(x + dt / 2 * k2x, y + dt / 2 * k2y)
    local k4x, k4y = f(x + dt * k3x, y + dt * k3y)
    x = x + dt / 6 * (k1x + 2 * k2x + 2 * k3x + k4x)
    y = y + dt / 6 * (k1y + 2 * k2y + 2 * k3y + k4y)
    t = t + dt
    if y > peak then peak = y end
    if rising and y < prev then                    -- a predator maximum
      if last_peak_t then period = t - last_peak_t end
      last_peak_t = t
    end
    rising = y >= prev
    prev = y
  end
  return { a = a, c = c, peak = peak, period = period or 0 }
end

local params = {}
for i = 1, grid do
  for j = 1, grid do
    params[#params + 1] = { 0.05 + 0.45 * (i - 1) / (grid - 1), 0.05 + 0.45 * (j - 1) / (grid - 1) }
  end
end

local t0 = now()
local r = pd.map(simulate, params, { unpack = true })
local elapsed = now() - t0

local best = r[1]
for i = 2, r.n do if r[i].peak > best.peak then best = r[i] end end
print(string.format("%d runs of %d RK4 steps in %.3f s (%.1f runs/s)", r.n, steps, elapsed, r.n / elapsed))
print(string.format("largest predator peak %.1f at a = %.3f, c = %.3f (period %.1f)",
                    best.peak, best.a, best.c, best.period))
