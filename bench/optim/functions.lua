--- bench/optim/functions.lua: the test functions of the optimisation bench,
-- with their boxes and optimal values, as defined in the protocol of the
-- anchor table (docs/optimisation.md, "How good: the bench"): sphere,
-- ellipsoid as pycma's cma.ff.elli, rosenbrock, rastrigin, ackley, griewank,
-- Schwefel 2.26.
local F = {}
local sqrt, cos, sin, exp, abs, pi = math.sqrt, math.cos, math.sin, math.exp, math.abs, math.pi

F.sphere = { box = { -5.12, 5.12 }, fopt = 0, f = function(x)
  local s = 0.0
  for i = 1, #x do s = s + x[i] * x[i] end
  return s
end }

F.ellipsoid = { box = { -5, 5 }, fopt = 0, f = function(x)
  local n, s = #x, 0.0
  if n == 1 then return x[1] * x[1] end
  for i = 1, n do s = s + 10 ^ (6 * (i - 1) / (n - 1)) * x[i] * x[i] end
  return s
end }

F.rosenbrock = { box = { -2.048, 2.048 }, fopt = 0, f = function(x)
  local s = 0.0
  for i = 1, #x - 1 do
    local a, b = x[i + 1] - x[i] * x[i], 1 - x[i]
    s = s + 100 * a * a + b * b
  end
  return s
end }

F.rastrigin = { box = { -5.12, 5.12 }, fopt = 0, f = function(x)
  local n, s = #x, 0.0
  for i = 1, n do s = s + x[i] * x[i] - 10 * cos(2 * pi * x[i]) end
  return 10 * n + s
end }

F.ackley = { box = { -32.768, 32.768 }, fopt = 0, f = function(x)
  local n, s1, s2 = #x, 0.0, 0.0
  for i = 1, n do s1 = s1 + x[i] * x[i]; s2 = s2 + cos(2 * pi * x[i]) end
  return -20 * exp(-0.2 * sqrt(s1 / n)) - exp(s2 / n) + 20 + exp(1)
end }

F.griewank = { box = { -600, 600 }, fopt = 0, f = function(x)
  local s, p = 0.0, 1.0
  for i = 1, #x do s = s + x[i] * x[i] / 4000; p = p * cos(x[i] / sqrt(i)) end
  return 1 + s - p
end }

local XS = 420.968746359982
local FS1 = 418.9828872724338 - XS * sin(sqrt(XS))
F.schwefel = { box = { -500, 500 }, fopt = nil, f = function(x)
  local n, s = #x, 0.0
  for i = 1, n do s = s + x[i] * sin(sqrt(abs(x[i]))) end
  return 418.9828872724338 * n - s
end }
-- Schwefel mirrored, f(-x): its optimum near the lower bound, which shows
-- a bias towards the upper bound (Playdoh's GA: its mutation clips there).
F.schwefelm = { box = { -500, 500 }, fopt = nil, f = function(x)
  local n, s = #x, 0.0
  for i = 1, n do s = s - x[i] * sin(sqrt(abs(x[i]))) end
  return 418.9828872724338 * n - s
end }

--- f* of Schwefel depends on n.
function F.fopt(name, n)
  if name == "schwefel" or name == "schwefelm" then return n * FS1 end
  return F[name].fopt
end

F.names = { "sphere", "ellipsoid", "rosenbrock", "rastrigin", "ackley", "griewank", "schwefel",
            "schwefelm" }
return F
