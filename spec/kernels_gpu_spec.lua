-- spec/kernels_gpu_spec.lua (ctest label gpu): real kernels on a real GPU.
-- Every test is pending, with the reason, where pd.gpu.available() is
-- false (CI, machines without a GPU); spec/gpu_spec.lua covers the rest
-- through the stub driver.
local H = require "helper"
local pd = require "pd"

local usable, why = pd.gpu.available()
if usable and os.getenv("PDLUA_CUDA_DRIVER") and os.getenv("PDLUA_STUB_DEVICES") then
  usable, why = false, "the stub driver is loaded (PDLUA_CUDA_DRIVER), not a GPU's"
end

local SOURCE = [[
extern "C" __global__ void twice(double *x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= 2.0;
}
extern "C" __global__ void pdlua_types(double *out, float a, double b, int c, unsigned d,
                                       long long e, unsigned long long f) {
  out[0] = a; out[1] = b; out[2] = c; out[3] = d; out[4] = (double)e; out[5] = (double)f;
}
extern "C" __global__ void rastrigin(const double *X, double *F, int pop, int dim) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= pop) return;
  const double *x = X + (size_t)i * dim;
  double s = 10.0 * dim;
  for (int j = 0; j < dim; j++) s += x[j] * x[j] - 10.0 * cos(6.283185307179586 * x[j]);
  F[i] = s;
}
extern "C" __global__ void iota32(int *y, float *z, unsigned char *u, long long *l, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) { y[i] = i; z[i] = 0.5f * i; u[i] = (unsigned char)(i & 255); l[i] = (long long)i << 33; }
}
extern "C" __global__ void fault(double *x) { x[1LL << 40] = 1.0; }
]]

local function gpu_it(name, fn)
  it(name, function()
    if not usable then pending("no GPU: " .. tostring(why)) return end
    fn()
  end)
end

describe("pd.gpu on a GPU", function()
  local cache = os.tmpname()
  os.remove(cache)
  local mod
  setup(function()
    if usable then mod = assert(pd.gpu.compile(SOURCE)) end
  end)
  teardown(function() os.execute("rm -rf " .. H.q(cache)) end)

  gpu_it("doubles 100 doubles (Playdoh's GPU test)", function()
    local k = assert(mod:kernel("twice", "double*, int"))
    local x = pd.linspace(1, 100, 100)
    local d = assert(pd.gpu.array(x))
    assert(k:launch(1, 128, d, 100))
    local y = assert(d:tohost())
    for i = 1, 100 do assert.equals(2 * x[i], y[i]) end
    d:free()
  end)

  gpu_it("passes every scalar type as declared", function()
    local k = assert(mod:kernel("pdlua_types",
                                "double*, float, double, int, unsigned, long long, unsigned long long"))
    local out = assert(pd.gpu.zeros(6))
    assert(k:launch(1, 1, out, 1.5, -2.25, -7, 4000000000, -2^53, 2^62))
    local h = assert(out:tohost())
    assert.same({ 1.5, -2.25, -7, 4000000000, -2^53, 2^62 }, h:totable())
  end)

  gpu_it("writes buffers of every dtype", function()
    local k = assert(mod:kernel("iota32", "int*, float*, unsigned char*, long long*, int"))
    local n = 1000
    local y, z, u, l = pd.gpu.zeros(n, "i32"), pd.gpu.zeros(n, "f32"), pd.gpu.zeros(n, "u8"),
                       pd.gpu.zeros(n, "i64")
    assert(k:launch(math.ceil(n / 256), 256, y, z, u, l, n))
    local Y, Z, U, L = y:tohost(), z:tohost(), u:tohost(), l:tohost()
    for i = 1, n do
      assert.equals(i - 1, Y[i]); assert.equals(0.5 * (i - 1), Z[i])
      assert.equals((i - 1) % 256, U[i]); assert.equals((i - 1) * 2^33, L[i])
    end
  end)

  gpu_it("evaluates a Rastrigin population as the CPU does", function()
    local k = assert(mod:kernel("rastrigin", "const double*, double*, int, int"))
    local pop, dim = 5000, 30
    local X = pd.random.new(3):uniform(-5.12, 5.12, pop, dim)
    local dX, dF = assert(pd.gpu.array(X)), assert(pd.gpu.zeros(pop))
    assert(k:launch(math.ceil(pop / 128), 128, dX, dF, pop, dim))
    local F = assert(dF:tohost())
    for i = 1, pop, 97 do
      local s = 10 * dim
      for j = 1, dim do
        local x = X:get(i, j)
        s = s + x * x - 10 * math.cos(2 * math.pi * x)
      end
      assert.is_true(math.abs(F[i] - s) <= 1e-9 * s, i)
    end
  end)

  gpu_it("copies 64 MB both ways unchanged", function()
    local a = pd.random.new(5):uniform(0, 1, 8 * 1048576)
    local d = assert(pd.gpu.array(a))
    local b = assert(d:tohost())
    assert.equals(a:sum(), b:sum())
    assert.equals(a[8 * 1048576], b[8 * 1048576])
  end)

  gpu_it("loads both the CUBIN and the PTX of a kernel", function()
    local arch = pd.gpu.devices()[pd.gpu.device() + 1].arch
    for _, a in ipairs { "sm_" .. arch, "compute_" .. arch } do
      local m = assert(pd.gpu.compile(SOURCE, { arch = a }))
      assert.truthy(m:kernel("twice", "double*, int"))
    end
  end)

  gpu_it("checks a signature against the compiled kernel (drivers 12.4+)", function()
    local ok, err = pcall(mod.kernel, mod, "twice", "float, int")
    -- older drivers cannot tell: then the kernel is made
    if ok then return end
    assert.matches("argument 1 is declared float %(4 bytes%) but the compiled kernel takes 8", err)
  end)

  gpu_it("reports a faulting kernel at sync, in a process of its own", function()
    local out, err, rc = H.sh(H.q(H.pdlua) .. " -e " .. H.q([[
      local gpu = require('pd').gpu
      local m = assert(gpu.compile(']] .. 'extern "C" __global__ void fault(double *x) { x[1LL << 40] = 1.0; }' .. [['))
      local k = assert(m:kernel('fault', 'double*'))
      assert(k:launch(1, 1, assert(gpu.zeros(1))))
      print(gpu.sync())]]))
    assert.equals(0, rc, err)
    assert.matches("^nil\tcuCtxSynchronize: .*%(CUDA_ERROR_", out)
  end)

  gpu_it("runs pd.map{gpus = n} with each worker on its own device", function()
    local n = #pd.gpu.devices()
    local r = pd.map(function(x)
      local gpu = require("pd").gpu
      local m = assert(gpu.compile([[
extern "C" __global__ void twice(double *x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= 2.0;
}]]))
      local k = assert(m:kernel("twice", "double*, int"))
      local d = assert(gpu.array({ x, x }))
      assert(k:launch(1, 32, d, 2))
      return { gpu.device(), d:tohost():sum() }
    end, { 1, 2, 3, 4, 5, 6, 7, 8 }, { gpus = n, chunk = 1 })
    local seen, count = {}, 0
    for i = 1, 8 do
      assert.equals(4 * i, r[i][2])
      if not seen[r[i][1]] then seen[r[i][1]] = true; count = count + 1 end
    end
    assert.is_true(count >= 1 and count <= n)
    if n > 1 then assert.is_true(count > 1, "8 tasks one at a time should reach more than one GPU") end
  end)

  for _, ex in ipairs { "gpu_double.lua", "gpu_rastrigin.lua" } do
    gpu_it("examples/" .. ex .. " runs and checks itself", function()
      local out, err, rc = H.pdlua_run("run " .. H.q(H.source .. "/examples/" .. ex))
      assert.equals(0, rc, err)
      assert.is_nil(out:match("^no GPU"))
    end)
  end
end)
