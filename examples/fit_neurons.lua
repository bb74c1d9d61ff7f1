-- fit_neurons.lua: fit leaky integrate-and-fire neurons to recorded spike
-- times, several neurons at once with groups, as Brian's model fitting
-- toolbox did on Playdoh (Rossant et al., "Automatic fitting of spiking
-- neuron models to electrophysiological recordings", Front. Neuroinform.
-- 4:2, 2010).  The model: tau dv/dt = -v + R I(t), spike and reset to 0
-- when v crosses 1.  The fitness is a distance between the model's and the
-- target's spike trains (in seconds: 0 when every spike matches).
--
--   build/pdlua run examples/fit_neurons.lua [--cpus N]
local pd = require "pd"

local DT, T = 0.0005, 2.0                 -- 0.5 ms steps, 2 s of input
local steps = math.floor(T / DT)

-- One shared noisy input current.
local g = pd.random.new(7)
local I = {}
local x = 0.0
for k = 1, steps do                        -- Ornstein-Uhlenbeck around 1.5
  x = x + DT / 0.01 * (1.5 - x) + 0.6 * math.sqrt(2 * DT / 0.01) * g:normal()
  I[k] = x
end

local function simulate(tau, R)
  local v, spikes = 0.0, {}
  for k = 1, steps do
    v = v + DT / tau * (-v + R * I[k])
    if v > 1 then spikes[#spikes + 1] = k * DT; v = 0.0 end
  end
  return spikes
end

-- Three "recorded" neurons with different parameters.
local truth = { { tau = 0.010, R = 1.2 }, { tau = 0.020, R = 1.5 }, { tau = 0.035, R = 2.0 } }
local targets = {}
for n, p in ipairs(truth) do targets[n] = simulate(p.tau, p.R) end

-- Distance between spike trains: each spike's distance to the nearest spike
-- of the other train, capped at 10 ms, summed both ways (continuous in the
-- parameters, unlike a count of coincidences).
local function distance(a, b)
  local j, d = 1, 0.0
  for i = 1, #a do
    while j < #b and b[j + 1] <= a[i] do j = j + 1 end
    local best = 0.01
    if b[j] then best = math.min(best, math.abs(b[j] - a[i])) end
    if b[j + 1] then best = math.min(best, math.abs(b[j + 1] - a[i])) end
    d = d + best
  end
  return d
end

-- With groups, the fitness gets the group (the neuron) after the point.
local function fitness(p, neuron)
  local s = simulate(p.tau, p.R)
  local t = targets[neuron]
  return distance(t, s) + distance(s, t)
end

local r = pd.minimize(fitness, {
  params = { tau = { 0.002, 0.005, 0.05, 0.1 }, R = { 0.5, 1, 3, 5 } },
  groups = #truth,
  algorithm = "cmaes", popsize = 20, restarts = 3, target = 0, seed = 3,
})

print(string.format("%d evaluations, %d iterations", r.evaluations, r.iterations))
for n = 1, #truth do print(string.format("neuron %d: %s after %d runs", n, r.groups[n].stop, r.groups[n].runs)) end
print(string.format("%-7s %9s %9s %9s %9s %9s", "neuron", "tau", "fit tau", "R", "fit R", "distance"))
for n, p in ipairs(truth) do
  local gr = r.groups[n]
  print(string.format("%-7d %9.4f %9.4f %9.3f %9.3f %9.2g", n, p.tau, gr.x.tau, p.R, gr.x.R, gr.f))
end
