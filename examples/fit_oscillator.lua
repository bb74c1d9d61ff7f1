-- fit_oscillator.lua: recover the parameters of a damped oscillator from
-- noisy samples, x(t) = a exp(-gamma t) cos(omega t + phi) + noise.
-- The classic least-squares model fit (e.g. Press et al., "Numerical
-- Recipes", ch. 15), done with CMA-ES over named parameters.
--
--   build/pdlua run examples/fit_oscillator.lua [--cpus N]
local pd = require "pd"

local truth = { a = 2.0, gamma = 0.3, omega = 2.5, phi = 0.7 }

-- Synthetic data: 200 samples on [0, 10] with Gaussian noise (sd 0.05).
local g = pd.random.new(42)
local ts, xs = {}, {}
for k = 1, 200 do
  local t = (k - 1) * 10 / 199
  ts[k] = t
  xs[k] = truth.a * math.exp(-truth.gamma * t) * math.cos(truth.omega * t + truth.phi) + 0.05 * g:normal()
end

-- Sum of squared residuals; ts and xs travel to the workers once.
local function sse(p)
  local s = 0.0
  for k = 1, #ts do
    local m = p.a * math.exp(-p.gamma * ts[k]) * math.cos(p.omega * ts[k] + p.phi)
    s = s + (m - xs[k]) ^ 2
  end
  return s
end

local r = pd.minimize(sse, {
  params = {
    a = { 0, 0.5, 5, 10 },            -- {bound min, init min, init max, bound max}
    gamma = { 0, 0.01, 1, 5 },
    omega = { 0.1, 0.5, 5, 10 },
    phi = { -math.pi, -math.pi, math.pi, math.pi },
  },
  restarts = 4,                       -- IPOP: the phase makes this multimodal
  seed = 1,
})

print(string.format("stopped: %s after %d evaluations (%d runs)", r.stop, r.evaluations, r.runs))
print(string.format("%-6s %10s %10s", "param", "true", "fitted"))
for _, k in ipairs { "a", "gamma", "omega", "phi" } do
  print(string.format("%-6s %10.4f %10.4f", k, truth[k], r.x[k]))
end
print(string.format("residual rms %.4f (noise sd 0.05)", math.sqrt(r.f / #ts)))
