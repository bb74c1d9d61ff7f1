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
    local stub = H.build .. "/lib/stubcuda/libcuda.so.1"
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
