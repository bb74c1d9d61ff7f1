-- examples/gpu_double.lua: Playdoh's GPU test (Rossant et al., "Playdoh: a
-- lightweight Python library for distributed computing and optimisation",
-- J. Comput. Sci. 2013; its examples/gpu.py): a CUDA kernel that doubles
-- 100 doubles, mapped over two inputs, each input on its own GPU.
--
--   build/pdlua run examples/gpu_double.lua
--
-- With one GPU both inputs run on it, one after the other.  Without a
-- usable GPU it prints "no GPU: <reason>" and exits 0: nothing to show,
-- nothing wrong (docs/gpu.md).
local pd = require "pd"

local ok, why = pd.gpu.available()
if not ok then
  print("no GPU: " .. why)
  os.exit(0)
end

local SOURCE = [[
extern "C" __global__ void twice(double *x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= 2.0;
}
]]

-- Runs in a GPU worker: pd.gpu.device() is the GPU that worker is bound to.
local function double_on_gpu(x)
  local gpu = require("pd").gpu
  local mod = assert(gpu.compile(SOURCE))
  local twice = assert(mod:kernel("twice", "double*, int"))
  local d = assert(gpu.array(x))
  assert(twice:launch(math.ceil(#x / 128), 128, d, #x))
  local y = assert(d:tohost())
  d:free()
  return { device = gpu.device(), y = y }
end

local inputs = { pd.linspace(1, 100, 100), pd.linspace(1, 100, 100) * -0.5 }
local ngpus = math.min(#inputs, #pd.gpu.devices())
local results = pd.map(double_on_gpu, inputs, { gpus = ngpus })

local bad = 0
for i, r in ipairs(results) do
  local x, y = inputs[i], r.y
  for k = 1, #x do
    if y[k] ~= 2 * x[k] then bad = bad + 1 end
  end
  print(string.format("input %d on GPU %d: y[1] = %g, y[100] = %g, sum = %g", i, r.device, y[1],
                      y[100], y:sum()))
end
if bad > 0 then
  io.stderr:write(string.format("gpu_double: %d values are not twice their input\n", bad))
  os.exit(1)
end
print(string.format("all %d values doubled on %d GPU%s", 2 * 100, ngpus, ngpus > 1 and "s" or ""))
