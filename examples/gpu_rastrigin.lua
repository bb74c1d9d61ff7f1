-- examples/gpu_rastrigin.lua: a GPU fitness function.  The Rastrigin
-- function (Rastrigin 1974; in n dimensions as Muehlenbein, Schomisch and
-- Born, Parallel Computing 17, 1991), f(x) = 10 n + sum(x_i^2 - 10 cos(2 pi
-- x_i)), minimum 0 at x = 0, evaluated for a whole population in one kernel
-- (one thread per individual) while CMA-ES runs on the coordinator:
-- pd.minimize{vectorized = true, gpus = n} hands each GPU worker one block
-- of the population per generation.
--
--   build/pdlua run examples/gpu_rastrigin.lua [dim] [popsize]
--
-- Without a usable GPU it prints "no GPU: <reason>" and exits 0.
local pd = require "pd"

local ok, why = pd.gpu.available()
if not ok then
  print("no GPU: " .. why)
  os.exit(0)
end

local dim = tonumber(arg and arg[1]) or 10
local popsize = tonumber(arg and arg[2]) or 200

local SOURCE = [[
extern "C" __global__ void rastrigin(const double *X, double *F, int pop, int dim) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= pop) return;
  const double *x = X + (size_t)i * dim;
  double s = 10.0 * dim;
  for (int j = 0; j < dim; j++) s += x[j] * x[j] - 10.0 * cos(6.283185307179586 * x[j]);
  F[i] = s;
}
]]

-- X: a block of the population, pd.array rows; returns their values.
local function fitness(X)
  local gpu = require("pd").gpu
  local mod = assert(gpu.compile(SOURCE))          -- compiled once per worker, then from memory
  local k = assert(mod:kernel("rastrigin", "const double*, double*, int, int"))
  local pop, d = X:shape()
  local dX = assert(gpu.array(X))
  local dF = assert(gpu.zeros(pop))
  assert(k:launch(math.ceil(pop / 128), 128, dX, dF, pop, d))
  local F = assert(dF:tohost())
  dX:free()
  dF:free()
  return F
end

local function rastrigin_cpu(x)
  local s = 10 * #x
  for j = 1, #x do s = s + x[j] * x[j] - 10 * math.cos(2 * math.pi * x[j]) end
  return s
end

local ngpus = #pd.gpu.devices()
local t0 = os.time()
local r = pd.minimize(fitness, {
  dim = dim, bounds = { -5.12, 5.12 }, algorithm = "cmaes", popsize = popsize,
  vectorized = true, gpus = ngpus, budget = 200 * popsize, restarts = 2, seed = 7,
  progress = false,
})
print(string.format("Rastrigin, dim %d, population %d, on %d GPU%s: f = %.6g after %d evaluations "
                    .. "(%s), %d s", dim, popsize, ngpus, ngpus > 1 and "s" or "", r.f,
                    r.evaluations, r.stop, os.time() - t0))
-- the GPU's value of the best point, checked on the CPU
local fc = rastrigin_cpu(r.x)
print(string.format("best f on the GPU %.12g, on the CPU %.12g", r.f, fc))
if math.abs(fc - r.f) > 1e-9 * math.max(1, math.abs(fc)) then
  io.stderr:write("gpu_rastrigin: the GPU and the CPU disagree\n")
  os.exit(1)
end
