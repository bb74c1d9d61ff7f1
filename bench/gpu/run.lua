-- bench/gpu/run.lua: what pd.gpu costs and what it buys.
--
--   build/pdlua run bench/gpu/run.lua [--quick]
--
-- (a) kernel launch overhead: an empty kernel launched N times then one
--     sync (us per launch, the asynchronous rate), and launch + sync each
--     time (us per round trip); reference: the usual 2-5 us of a CUDA launch.
-- (b) host-device bandwidth: pd.array <-> pd.gpu.array copies of 1 to
--     256 MB (GB/s, H2D and D2H); reference: the CUDA samples'
--     bandwidthTest (1_Utilities/bandwidthTest) on the same machine, which
--     uses pinned host memory where pd.arrays are pageable: run it beside
--     this and put its figures in REF below, or pass --ref-h2d/--ref-d2h.
-- (c) population fitness: Rastrigin for popsize 10^4..10^6 and dim 10, 100,
--     one kernel (one thread per individual) on one GPU, transfers
--     included, and on all GPUs through pd.map{gpus=}, against the same
--     function in Lua on all CPU workers through pd.map (one block of rows
--     per worker), in millions of evaluations per second.
-- Without a usable GPU it prints "no GPU: <reason>" and exits 0.
local pd = require "pd"
local core = require "pd.core"

local quick, ref_h2d, ref_d2h = false, nil, nil
do
  local i = 1
  while arg and arg[i] do
    if arg[i] == "--quick" then quick = true
    elseif arg[i] == "--ref-h2d" then i = i + 1; ref_h2d = tonumber(arg[i])
    elseif arg[i] == "--ref-d2h" then i = i + 1; ref_d2h = tonumber(arg[i])
    else io.stderr:write("usage: pdlua run bench/gpu/run.lua [--quick] [--ref-h2d GB/s] [--ref-d2h GB/s]\n")
      os.exit(2) end
    i = i + 1
  end
end

local ok, why = pd.gpu.available()
if not ok then
  print("no GPU: " .. why)
  os.exit(0)
end

-- Reference figures.  Launch: the commonly measured 2-5 us of cuLaunchKernel
-- on an idle device.  Bandwidth: bandwidthTest --memory=pinned on a PCIe
-- 5.0 x16 host (H100/H200 PCIe hosts report about 50-55 GB/s each way;
-- replace with this machine's own run of bandwidthTest when you have it).
local REF = { launch_lo = 2.0, launch_hi = 5.0, h2d = ref_h2d or 53.0, d2h = ref_d2h or 53.0 }

local gpu = pd.gpu
local now = core.now
local devs = gpu.devices()
print(string.format("device 0: %s, cc %s, %d SMs, %.1f GiB; %d device%s; driver %s; NVRTC %s",
                    devs[1].name, devs[1].cc, devs[1].sms, devs[1].memory / 2^30, #devs,
                    #devs > 1 and "s" or "", tostring(gpu.driver()), tostring(gpu.nvrtc())))

local EMPTY_SOURCE = [[
extern "C" __global__ void empty() {}
]]

local RASTRIGIN_SOURCE = [[
extern "C" __global__ void rastrigin(const double *X, double *F, int pop, int dim) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= pop) return;
  const double *x = X + (size_t)i * dim;
  double s = 10.0 * dim;
  for (int j = 0; j < dim; j++) s += x[j] * x[j] - 10.0 * cos(6.283185307179586 * x[j]);
  F[i] = s;
}
]]

local function row(...) print(string.format(...)) end

-- ---- (a) launch overhead ------------------------------------------------------
do
  local t0 = now()
  local mod = assert(gpu.compile(EMPTY_SOURCE))
  local k = assert(mod:kernel("empty", ""))
  local t_ready = now() - t0
  for _ = 1, 200 do assert(k:launch(1, 1)) end
  assert(gpu.sync())
  local n = quick and 2000 or 20000
  t0 = now()
  for _ = 1, n do k:launch(1, 1) end
  assert(gpu.sync())
  local async_us = (now() - t0) / n * 1e6
  local m = quick and 500 or 5000
  t0 = now()
  for _ = 1, m do k:launch(1, 1); gpu.sync() end
  local sync_us = (now() - t0) / m * 1e6
  print()
  row("(a) launch overhead (empty kernel, 1x1; compile+load %.0f ms, from the cache when warm)", t_ready * 1e3)
  row("  %-34s %10s %14s %8s", "", "us", "reference us", "ratio")
  row("  %-34s %10.2f %14s %8.2f", "launch, then one sync for all", async_us,
      string.format("%.0f-%.0f", REF.launch_lo, REF.launch_hi), async_us / REF.launch_hi)
  row("  %-34s %10.2f %14s %8.2f", "launch + sync each", sync_us,
      string.format("%.0f-%.0f", REF.launch_lo, REF.launch_hi), sync_us / REF.launch_hi)
end

-- ---- (b) bandwidth ---------------------------------------------------------------
do
  print()
  row("(b) host <-> device bandwidth, pageable pd.array memory (reference: bandwidthTest, pinned)")
  row("  %8s %10s %10s %10s %10s", "MB", "H2D GB/s", "ratio", "D2H GB/s", "ratio")
  local sizes = quick and { 1, 16 } or { 1, 4, 16, 64, 256 }
  for _, mb in ipairs(sizes) do
    local n = mb * 131072
    local a = pd.zeros(n) + 1
    local d = assert(gpu.array(a))
    local reps = mb >= 64 and 5 or 20
    d:upload(a); d:tohost(a)                       -- warm
    local t0 = now()
    for _ = 1, reps do assert(d:upload(a)) end
    assert(gpu.sync())
    local h2d = mb * 1048576 * reps / (now() - t0) / 1e9
    t0 = now()
    for _ = 1, reps do assert(d:tohost(a)) end
    local d2h = mb * 1048576 * reps / (now() - t0) / 1e9
    assert(a[n] == 1)
    d:free()
    row("  %8d %10.2f %10.2f %10.2f %10.2f", mb, h2d, h2d / REF.h2d, d2h, d2h / REF.d2h)
  end
end

-- ---- (c) population fitness ---------------------------------------------------
local function rastrigin_block(X)                  -- the CPU version, a block of rows
  local pop, dim = X:shape()
  local F, cos, twopi = {}, math.cos, 2 * math.pi
  for i = 1, pop do
    local s = 10 * dim
    for j = 1, dim do
      local x = X:get(i, j)
      s = s + x * x - 10 * cos(twopi * x)
    end
    F[i] = s
  end
  return pd.array(F)
end

local function gpu_block(X)                        -- the GPU version, in a GPU worker or here
  local g = require("pd").gpu
  local mod = assert(g.compile(RASTRIGIN_SOURCE))
  local k = assert(mod:kernel("rastrigin", "const double*, double*, int, int"))
  local pop, dim = X:shape()
  local dX = assert(g.array(X))
  local dF = assert(g.zeros(pop))
  assert(k:launch(math.floor((pop + 255) / 256), 256, dX, dF, pop, dim))
  local F = assert(dF:tohost())
  dX:free(); dF:free()
  return F
end

local function split(X, nb)                        -- nb blocks of rows (copies)
  local pop = X:shape()
  local blocks = {}
  for b = 1, nb do
    local a, e = math.floor((b - 1) * pop / nb) + 1, math.floor(b * pop / nb)
    blocks[b] = X:slice(a, e):copy()
  end
  return blocks
end

do
  local cpus = require("pd.core.map").machine()
  print()
  row("(c) Rastrigin population, millions of evaluations per second (transfers included)")
  row("  %9s %5s %12s %12s %14s %14s %9s", "popsize", "dim", "1 GPU here", "kernel only",
      string.format("%d GPU wkrs", #devs), string.format("%d CPU wkrs", cpus), "GPU/CPU")
  local pops = quick and { 1e4 } or { 1e4, 1e5, 1e6 }
  local rng = pd.random.new(1)
  for _, pop in ipairs(pops) do
    for _, dim in ipairs { 10, 100 } do
      pop = math.floor(pop)
      local X = rng:uniform(-5.12, 5.12, pop, dim)
      -- one GPU in this process, the kernel alone too
      gpu_block(X)                                                 -- compile, load, warm
      local t0 = now()
      local F = gpu_block(X)
      local t_here = now() - t0
      local mod = assert(gpu.compile(RASTRIGIN_SOURCE))
      local k = assert(mod:kernel("rastrigin", "const double*, double*, int, int"))
      local dX, dF = assert(gpu.array(X)), assert(gpu.zeros(pop))
      assert(gpu.sync())
      t0 = now()
      assert(k:launch(math.floor((pop + 255) / 256), 256, dX, dF, pop, dim))
      assert(gpu.sync())
      local t_kernel = now() - t0
      dX:free(); dF:free()
      -- every GPU through GPU workers
      local gblocks = split(X, #devs)
      pd.map(gpu_block, gblocks, { gpus = #devs })                 -- start and warm the workers
      t0 = now()
      local GR = pd.map(gpu_block, gblocks, { gpus = #devs })
      local t_gmap = now() - t0
      -- every CPU through pd.map
      local cblocks = split(X, cpus)
      pd.map(rastrigin_block, split(X:slice(1, math.min(pop, 64 * cpus)):copy(), cpus))  -- warm
      t0 = now()
      local CR = pd.map(rastrigin_block, cblocks)
      local t_cpu = now() - t0
      -- the answers agree
      local i = 1
      for b = 1, #CR do
        for j = 1, #CR[b] do
          assert(math.abs(CR[b][j] - F[i]) <= 1e-9 * math.abs(F[i]) + 1e-9, "GPU and CPU disagree")
          i = i + 1
        end
      end
      local gi = 0
      for b = 1, #GR do gi = gi + #GR[b] end
      assert(gi == pop)
      local me = function(t) return pop / t / 1e6 end
      row("  %9d %5d %12.1f %12.1f %14.1f %14.1f %9.1f", pop, dim, me(t_here), me(t_kernel),
          me(t_gmap), me(t_cpu), t_cpu / math.min(t_here, t_gmap))
    end
  end
end
pd.shutdown()
