-- pd.gpu without a GPU (this machine, CI): everything loads, the reasons
-- are plain, PTX still compiles when NVRTC is there, and calls that need a
-- device fail cleanly.  Real-device specs live in *_gpu_spec.lua files.
local H = require "helper"
local q = H.q
local pd = require "pd"

local KERNEL = [[
extern "C" __global__ void twice(double *x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= 2.0;
}
]]

-- Run a chunk in a fresh pdlua with extra environment; returns stdout, rc.
local function fresh(env, code)
  local out, err, rc = H.sh("env " .. env .. " " .. q(H.pdlua) .. " -e " .. q(code))
  return out, err, rc
end

describe("pd.gpu without a usable GPU", function()
  local cache

  setup(function()
    cache = os.tmpname()
    os.remove(cache)
  end)
  teardown(function() os.execute("rm -rf " .. q(cache)) end)

  it("says the driver is missing, as a value, not an error", function()
    local out, err, rc = fresh("PDLUA_CUDA_DRIVER=/nonexistent/libcuda.so.1",
      "local ok, why = require('pd').gpu.available(); print(ok); print(why)")
    assert.equals(0, rc, err)
    local ok, why = out:match("^(%a+)\n(.*)\n$")
    assert.equals("false", ok)
    assert.matches("^not available: no CUDA driver", why)
  end)

  it("says a present but unusable driver is unusable, with the driver's reason", function()
    local stub = H.build .. "/spec/stubcuda/libcuda.so.1"
    local out, err, rc = fresh("PDLUA_CUDA_DRIVER=" .. q(stub), [[
      local gpu = require('pd').gpu
      local ok, why = gpu.available()
      local devs, why2 = gpu.devices()
      print(ok, #devs); print(why); print(why2 == why)]])
    assert.equals(0, rc, err)
    local first, why, same = out:match("^([^\n]*)\n([^\n]*)\n([^\n]*)\n$")
    assert.equals("false\t0", first)
    assert.matches("driver is present but cuInit failed: no CUDA%-capable device is detected %(error 100%)", why)
    assert.equals("true", same)
  end)

  it("refuses to guess an architecture with no device, and says how to get PTX", function()
    if pd.gpu.available() then pending("a GPU is present here") return end
    local mod, why = pd.gpu.compile(KERNEL)
    assert.is_nil(mod)
    assert.matches("no device to compile for", why)
    assert.matches("arch = 'compute_XY'", why)
  end)

  it("compiles PTX for an explicit arch when NVRTC is present, and caches it", function()
    local version, path = pd.gpu.nvrtc()
    if not version then pending("NVRTC is not installed here: " .. tostring(path)) return end
    local code = [[
      local gpu = require('pd').gpu
      local src = ...
      local m = assert(gpu.compile(src, {arch = "compute_80", options = {"-DSCALE=2"}}))
      io.write(m.kind, " ", tostring(m.cached), " ", m:ptx():match("%.entry%s+twice") or "none", "\n")]]
    local script = H.tmpfile(code, ".lua")
    local src = H.tmpfile(KERNEL, ".cu")
    local runner = H.tmpfile("local f = assert(io.open(arg[1])); local s = f:read('*a'); f:close()\n" ..
                             "assert(loadfile(arg[2]))(s)\n", ".lua")
    local cmd = "env PDLUA_CACHE=" .. q(cache) .. " " .. q(H.pdlua) .. " " .. q(runner) .. " " .. q(src) .. " " .. q(script)
    local out1, err1, rc1 = H.sh(cmd)
    assert.equals(0, rc1, err1)
    assert.equals("ptx false .entry twice\n", out1)
    local out2, err2, rc2 = H.sh(cmd)                 -- a new process: from the disk cache
    assert.equals(0, rc2, err2)
    assert.equals("ptx true .entry twice\n", out2)
    os.remove(script); os.remove(src); os.remove(runner)
  end)

  it("returns the compiler's log for bad source", function()
    if not pd.gpu.nvrtc() then pending("NVRTC is not installed here") return end
    local mod, log = pd.gpu.compile("__global__ void broken( {", { arch = "compute_80" })
    assert.is_nil(mod)
    assert.matches("error", log)
  end)

  it("reports a missing NVRTC as a value", function()
    local out, err, rc = fresh("PDLUA_NVRTC=/nonexistent/libnvrtc.so", [[
      local gpu = require('pd').gpu
      print(gpu.nvrtc())
      print(gpu.compile("x", {arch = "compute_80"}))]])
    assert.equals(0, rc, err)
    assert.matches("^nil\tnot available: PDLUA_NVRTC=/nonexistent/libnvrtc.so", out)
    assert.matches("\nnil\tnot available: PDLUA_NVRTC=", out)
  end)

  it("raises on misuse", function()
    assert.has_error(function() pd.gpu.compile(42) end, "bad argument #1 to 'compile' (CUDA source string expected)")
    assert.has_error(function() pd.gpu.compile("x", { arch = "volta" }) end)
  end)

  it("gives no kernel without a device, with the reason", function()
    if pd.gpu.available() or not pd.gpu.nvrtc() then pending("needs NVRTC and no GPU") return end
    local m = assert(pd.gpu.compile(KERNEL, { arch = "compute_80" }))
    local k, why = m:kernel("twice", "double*, int")
    assert.is_nil(k)
    assert.matches("^not available", why)
  end)
end)

-- ---------------------------------------------------------------------------
-- The launch path through the stub driver (spec/c/stub_cuda.c): fake devices
-- whose memory is host memory, PTX parameter lists read by the stub, host
-- twins of a few kernels, and a log of what pdlua handed the driver.

-- A PTX image written by hand (no NVRTC needed): the stub reads only the
-- header and each .entry's parameters, as ptxas would declare them.
local TYPES_PTX = [[
.version 9.0
.target sm_80
.address_size 64
.visible .entry pdlua_types(
	.param .u64 p0, .param .f32 p1, .param .f64 p2, .param .u32 p3,
	.param .u32 p4, .param .u64 p5, .param .u64 p6
)
{ ret; }
.visible .entry twice(
	.param .u64 twice_param_0,
	.param .u32 twice_param_1
)
{ ret; }
]]

-- Run code in a fresh pdlua on the stub with n devices; returns stdout,
-- stderr, rc and the stub's log.
local function on_stub(n, code, extra_env)
  local log = os.tmpname()
  local script = H.tmpfile("local PTX = " .. string.format("%q", TYPES_PTX) .. "\n" .. code, ".lua")
  local env = "PDLUA_CUDA_DRIVER=" .. q(H.build .. "/spec/stubcuda/libcuda.so.1") ..
              " PDLUA_STUB_DEVICES=" .. n .. " PDLUA_STUB_LOG=" .. q(log) .. " " .. (extra_env or "")
  local out, err, rc = H.sh("env " .. env .. " " .. q(H.pdlua) .. " run " .. q(script))
  local f = io.open(log)
  local text = f and f:read("*a") or ""
  if f then f:close() end
  os.remove(log)
  os.remove(script)
  return out, err, rc, text
end

describe("pd.gpu on the stub driver", function()
  it("lists the fake devices and the driver's version", function()
    local out, err, rc = on_stub(2, [[
      local gpu = require("pd").gpu
      local devs = gpu.devices()
      print(gpu.available(), #devs, devs[2].name, devs[2].cc, devs[2].arch, devs[2].index, gpu.driver())]])
    assert.equals(0, rc, err)
    assert.equals("true\t2\tpdlua stub device 1\t9.0\t90\t1\t13.0\n", out)
  end)

  it("marshals every scalar type as the kernel's parameters declare it", function()
    local out, err, rc, log = on_stub(1, [[
      local pd = require "pd"
      local k = assert(pd.gpu.load(PTX):kernel("pdlua_types",
                       "double *out, float, double, int, unsigned, long long, unsigned long long"))
      local out = assert(pd.gpu.zeros(6))
      assert(k:launch(1, 1, out, 1.5, -2.25, -7, 4000000000, -2^53, 2^62))
      local h = assert(out:tohost())
      print(string.format("%.17g %.17g %.17g %.17g %.17g %.17g", h[1], h[2], h[3], h[4], h[5], h[6]))]])
    assert.equals(0, rc, err)
    assert.equals("1.5 -2.25 -7 4000000000 -9007199254740992 4.6116860184273879e+18\n", out)
    -- the bytes themselves: f32 1.5 is 0000c03f, f64 -2.25 is 00000000000002c0, ...
    local params = log:match("launch pdlua_types dev=0 grid=1,1,1 block=1,1,1 shared=0 params=(%S+)")
    assert.truthy(params, log)
    local p = {}
    for w in params:gmatch("[^,]+") do p[#p + 1] = w end
    assert.equals(7, #p)
    assert.equals(16, #p[1])                          -- a device address
    assert.equals("0000c03f", p[2])
    assert.equals("00000000000002c0", p[3])
    assert.equals("f9ffffff", p[4])
    assert.equals("00286bee", p[5])
    assert.equals("000000000000e0ff", p[6])
    assert.equals("0000000000000040", p[7])
  end)

  it("copies arrays of every dtype to the device and back, shapes kept", function()
    local out, err, rc, log = on_stub(1, [[
      local pd = require "pd"
      for _, dt in ipairs { "f64", "f32", "i32", "i64", "u8" } do
        local a = pd.array({ { 1, 2, 3 }, { 4, 5, 250 } }, dt)
        local d = assert(pd.gpu.array(a))
        local b = assert(d:tohost())
        local r, c = b:shape()
        assert(b:dtype() == dt and r == 2 and c == 3 and d:dtype() == dt and #d == 6, dt)
        for i = 1, 2 do for j = 1, 3 do assert(b:get(i, j) == a:get(i, j), dt) end end
        -- into an existing array, and back up from another
        local into = pd.zeros(2, 3):astype(dt)
        assert(d:tohost(into) == into and into:get(2, 3) == 250)
        assert(d:upload(pd.ones(2, 3):astype(dt)) == d)
        assert(d:tohost():sum() == 6)
      end
      -- a list, a view (packed first) and a conversion
      local d1 = assert(pd.gpu.array({ 1, 2, 3 }, "i32"))
      local d2 = assert(pd.gpu.array(pd.array({ { 1, 2 }, { 3, 4 } }):col(2)))
      local d3 = assert(pd.gpu.array(pd.array({ 1.5, 2.5 }), "f32"))
      print(string.format("%s %g %g %s %g", d1:dtype(), d1:tohost():sum(), d2:tohost():sum(),
                          d3:dtype(), d3:tohost():sum()))]])
    assert.equals(0, rc, err)
    assert.equals("i32 6 6 f32 4\n", out)
    local allocs = select(2, log:gsub("alloc dev=0", ""))
    assert.is_true(allocs >= 8)
  end)

  it("runs the twin of a kernel on uploaded data and reads the result back", function()
    local out, err, rc = on_stub(1, [[
      local pd = require "pd"
      local k = assert(pd.gpu.load(PTX):kernel("twice", "double*, int"))
      local d = assert(pd.gpu.array(pd.linspace(1, 100, 100)))
      assert(k:launch({ 1 }, { 128 }, d, 100))
      assert(pd.gpu.sync())
      local y = d:tohost()
      print(string.format("%g %g %g", y[1], y[100], y:sum()))]])
    assert.equals(0, rc, err)
    assert.equals("2 200 10100\n", out)
  end)

  it("frees device memory by free, by __close and by the collector, once each", function()
    local out, err, rc, log = on_stub(1, [[
      local pd = require "pd"
      local a = assert(pd.gpu.zeros(10))
      a:free(); a:free()                                -- idempotent
      print(tostring(a), pcall(a.tohost, a))
      do local b = assert(pd.gpu.zeros(20)) end         -- dropped
      collectgarbage(); collectgarbage()
      local c = assert(pd.gpu.zeros(30))
      c = nil
      collectgarbage(); collectgarbage()
      print("done")]])
    assert.equals(0, rc, err)
    assert.matches("^pd.gpu.array%(freed%)\tfalse\t.*freed", out)
    for _, bytes in ipairs { 80, 160, 240 } do
      assert.equals(1, select(2, log:gsub("alloc dev=0 bytes=" .. bytes .. "\n", "")), log)
      assert.equals(1, select(2, log:gsub("free dev=0 bytes=" .. bytes .. "\n", "")), log)
    end
  end)

  it("raises on misuse: argument count, types, ranges, freed buffers, other devices", function()
    local out, err, rc = on_stub(2, [[
      local pd = require "pd"
      local mod = pd.gpu.load(PTX)
      local k = assert(mod:kernel("twice", "double*, int"))
      local d = assert(pd.gpu.zeros(4))
      local f = assert(pd.gpu.zeros(4, "f32"))
      local function e(fn, ...) local ok, m = pcall(fn, ...); assert(not ok); print(m) end
      e(k.launch, k, 1, 32, d)
      e(k.launch, k, 1, 32, d, 1, 2)
      e(k.launch, k, 1, 32, d, 1.5)
      e(k.launch, k, 1, 32, d, 2^31)
      e(k.launch, k, 1, 32, d, "4")
      e(k.launch, k, 1, 32, f, 4)
      e(k.launch, k, 1, 32, pd.zeros(4), 4)
      e(k.launch, k, 1, 32, 42, 4)
      e(k.launch, k, 0, 32, d, 4)
      e(k.launch, k, { 1, 1, 1, 1 }, 32, d, 4)
      e(k.launch, k, 1, { 32.5 }, d, 4)
      assert(pd.gpu.use(1))
      local k1 = assert(mod:kernel("twice", "double*, int"))
      e(k1.launch, k1, 1, 32, d, 4)
      d:free()
      e(k.launch, k, 1, 32, d, 4)
      e(mod.kernel, mod, "twice", "double*, int, int")
      e(mod.kernel, mod, "twice", "float, int")
      e(mod.kernel, mod, "twice", "complex*, int")
      print(pd.gpu.use(2))]])
    assert.equals(0, rc, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    local want = {
      "kernel 'twice' takes 2 arguments %(double%*, int%), got 1",
      "kernel 'twice' takes 2 arguments %(double%*, int%), got 3",
      "argument 2 %(int%) must be an integer, got 1.5",
      "argument 2 %(int%) out of range",
      "argument 2 %(int%) must be a number, got string",
      "argument 1 %(double%*%) must be a pd.gpu array of f64, got f32",
      "argument 1 %(double%*%) must be a pd.gpu array, got a host pd.array",
      "argument 1 %(double%*%) must be a pd.gpu array, got number",
      "grid: positive integer expected",
      "grid: {x %[, y %[, z%]%]} expected",
      "block%[1%]: positive integer expected",
      "argument 1 is on device 0, the kernel on device 1",
      "argument 1 %(double%*%) was freed",
      "the signature has 3 arguments, the compiled kernel takes 2",
      "argument 1 is declared float %(4 bytes%) but the compiled kernel takes 8 bytes there",
      "bad signature: unknown argument type 'complex%*' %(argument 1%)",
      "nil\tno device 2 %(there are 2, numbered from 0%)",
    }
    assert.equals(#want, #lines, out)
    for i, w in ipairs(want) do assert.matches(w, lines[i]) end
  end)

  it("answers the driver's refusals as nil and the driver's own words", function()
    local cases = {
      { "alloc", "print(pd.gpu.zeros(4))", "^nil\tcuMemAlloc: out of memory %(CUDA_ERROR_OUT_OF_MEMORY%)\n$" },
      { "load", "print(pd.gpu.load(PTX):kernel('twice', 'double*, int'))",
        "^nil\tloading the ptx for sm_80 on device 0: cuModuleLoadDataEx: a PTX JIT compilation failed "
        .. "%(CUDA_ERROR_INVALID_PTX%)\nptxas fatal" },
      { "launch", "local k = pd.gpu.load(PTX):kernel('twice', 'double*, int')\n" ..
                  "print(k:launch(1, 1, assert(pd.gpu.zeros(1)), 1))",
        "^nil\tkernel 'twice': cuLaunchKernel: too many resources requested for launch " ..
        "%(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES%)\n$" },
      { "kernel", "local k = pd.gpu.load(PTX):kernel('twice', 'double*, int')\n" ..
                  "local d = assert(pd.gpu.zeros(1))\nprint(k:launch(1, 1, d, 1))\n" ..
                  "print(pd.gpu.sync())\nprint(d:tohost())",
        "^true\nnil\tcuCtxSynchronize: unspecified launch failure %(CUDA_ERROR_LAUNCH_FAILED%)\n" ..
        "nil\tcuMemcpyDtoH: unspecified launch failure %(CUDA_ERROR_LAUNCH_FAILED%)\n$" },
    }
    for _, c in ipairs(cases) do
      local out, err, rc = on_stub(1, "local pd = require 'pd'\n" .. c[2], "PDLUA_STUB_FAIL=" .. c[1])
      assert.equals(0, rc, err)
      assert.matches(c[3], out)
    end
    -- a name the module lacks
    local out, err, rc = on_stub(1, "print(require('pd').gpu.load(PTX):kernel('nope', 'int'))")
    assert.equals(0, rc, err)
    assert.equals("nil\tkernel 'nope': cuModuleGetFunction: named symbol not found (CUDA_ERROR_NOT_FOUND)\n", out)
  end)

  it("retries a CUBIN the driver refuses as PTX, when the arch was its choice", function()
    if not pd.gpu.nvrtc() then pending("NVRTC is not installed here") return end
    local cache = os.tmpname()
    os.remove(cache)
    finally(function() os.execute("rm -rf " .. q(cache)) end)
    local out, err, rc, log = on_stub(1, [[
      local gpu = require("pd").gpu
      local src = "extern \"C\" __global__ void twice(double *x, int n) { if (n) x[0] *= 2; }"
      local m = assert(gpu.compile(src))
      local k = assert(m:kernel("twice", "double*, int"))
      print(m.kind, m.arch, k)
      -- an explicit CUBIN is taken at its word
      local c = assert(gpu.compile(src, { arch = "sm_90" }))
      print(c:kernel("twice", "double*, int"))]], "PDLUA_CACHE=" .. q(cache))
    assert.equals(0, rc, err)
    assert.matches("^cubin\tsm_90\tpd.gpu.kernel%(twice%(double%*, int%), device 0%)\n", out)
    assert.matches("\nnil\tloading the cubin for sm_90 on device 0: cuModuleLoadDataEx: no kernel image", out)
    assert.matches("load dev=0 entries=1", log)
  end)
end)

describe("pd.map and pd.minimize with gpus", function()
  it("fails at once, saying why, when there is no driver", function()
    local out, err, rc = fresh("PDLUA_CUDA_DRIVER=/nonexistent/libcuda.so.1",
      "local pd = require('pd'); print(pcall(pd.map, function(x) return x end, {1, 2}, {gpus = 1}))")
    assert.equals(0, rc, err)
    assert.matches("^false\t.*pd.map: gpus = 1: not available: no CUDA driver", out)
  end)

  it("fails at once, saying why, when the driver is unusable or the GPUs too few", function()
    local out, err, rc = on_stub(0, [[
      local pd = require "pd"
      print(pcall(pd.minimize, function(X) return {} end,
                  { dim = 2, bounds = { -1, 1 }, vectorized = true, gpus = 1, budget = 10 }))]])
    assert.equals(0, rc, err)
    assert.matches("gpus = 1: not available: the CUDA driver is present but cuInit failed", out)
    out, err, rc = on_stub(2, "print(pcall(require('pd').map, print, {1}, {gpus = 3}))")
    assert.equals(0, rc, err)
    assert.matches("pd.map: gpus = 3: 3 GPUs asked for, this machine has 2", out)
    out, err, rc = on_stub(2, "print(pcall(require('pd').map, print, {1}, {gpus = 1.5}))")
    assert.matches("gpus must be a whole number", out)
  end)

  it("binds each worker to one GPU and spreads tasks over them", function()
    local out, err, rc = on_stub(2, [=[
      local pd = require "pd"
      local r = pd.map(function(x)
        local gpu = require("pd").gpu
        local k = assert(gpu.load(PTX):kernel("twice", "double*, int"))
        local d = assert(gpu.array({ x, x + 1 }))
        assert(k:launch(1, 32, d, 2))
        return { gpu.device(), d:tohost():sum(), os.getenv("PDLUA_GPU_DEVICE") }
      end, { 1, 2, 3, 4, 5, 6, 7, 8 }, { gpus = 2, chunk = 1 })
      local seen = {}
      for i = 1, #r do
        assert(r[i][2] == 2 * (2 * i + 1), i)
        assert(tostring(r[i][1]) == r[i][3])
        seen[r[i][1]] = true
      end
      print(#r, seen[0], seen[1], seen[2], pd.nodes()[1].gpus)]=])
    assert.equals(0, rc, err)
    assert.equals("8\ttrue\ttrue\tnil\t2\n", out)
  end)

  it("evaluates a vectorized population on GPU workers (examples/gpu_rastrigin.lua)", function()
    local cache = os.tmpname()
    os.remove(cache)
    finally(function() os.execute("rm -rf " .. q(cache)) end)
    local out, err, rc = H.sh("env PDLUA_CUDA_DRIVER=" .. q(H.build .. "/spec/stubcuda/libcuda.so.1") ..
                              " PDLUA_STUB_DEVICES=2 PDLUA_CACHE=" .. q(cache) .. " " ..
                              q(H.pdlua) .. " run " .. q(H.source .. "/examples/gpu_rastrigin.lua") ..
                              " 4 40")
    if not pd.gpu.nvrtc() then
      assert.is_not.equals(0, rc)                     -- compile needs NVRTC: the workers say so
      return
    end
    assert.equals(0, rc, err)
    assert.matches("Rastrigin, dim 4, population 40, on 2 GPUs: f = ", out)
    assert.matches("best f on the GPU ([%d.e+-]+), on the CPU %1\n", out)
  end)
end)

describe("the GPU examples without a GPU", function()
  for _, name in ipairs { "gpu_double.lua", "gpu_rastrigin.lua" } do
    it(name .. " says why and exits 0", function()
      local out, err, rc = H.sh("env PDLUA_CUDA_DRIVER=/nonexistent/libcuda.so.1 " .. q(H.pdlua) ..
                                " run " .. q(H.source .. "/examples/" .. name))
      assert.equals(0, rc, err)
      assert.equals("no GPU: not available: no CUDA driver", out:match("^[^(]*"):gsub("%s+$", ""))
    end)
  end

  it("their kernels compile to PTX for sm_90 (and assemble, where ptxas is)", function()
    if not pd.gpu.nvrtc() then pending("NVRTC is not installed here") return end
    local ptxas = os.getenv("CUDA_HOME") and os.getenv("CUDA_HOME") .. "/bin/ptxas" or "/usr/local/cuda/bin/ptxas"
    local have_ptxas = select(3, H.sh("test -x " .. q(ptxas))) == 0
    for _, name in ipairs { "gpu_double.lua", "gpu_rastrigin.lua", "../bench/gpu/run.lua" } do
      local f = assert(io.open(H.source .. "/examples/" .. name))
      local text = f:read("*a")
      f:close()
      local n = 0
      for src in text:gmatch("local [%u_]*SOURCE = %[%[(.-)%]%]") do
        n = n + 1
        local m = assert(pd.gpu.compile(src, { arch = "compute_90" }))
        assert.matches("%.target sm_90", m:ptx())
        for entry in src:gmatch('extern "C" __global__ void ([%w_]+)') do
          assert.matches("%.entry " .. entry .. "%(", m:ptx())
        end
        if have_ptxas then
          local p = H.tmpfile(m:ptx(), ".ptx")
          local _, perr, prc = H.sh(q(ptxas) .. " -arch=sm_90 -o /dev/null " .. q(p))
          os.remove(p)
          assert.equals(0, prc, perr)
        end
      end
      assert.is_true(n >= 1, name)
    end
  end)
end)
