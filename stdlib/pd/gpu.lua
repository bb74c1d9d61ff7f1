--- pd.gpu: CUDA kernels given as source, compiled at run time.
--
-- Nothing in pdlua links against CUDA: the driver (libcuda.so.1) and NVRTC
-- are found when first asked for (see docs/gpu.md for where).  Without them
-- every call answers plainly: `available()` gives false and the reason,
-- calls that need a device return nil and the reason.
--
--   local mod = assert(pd.gpu.compile(src))            -- for the devices here
--   local mod = assert(pd.gpu.compile(src, {arch = "compute_90"}))  -- PTX, no GPU needed
--   local k = assert(mod:kernel("twice", "double*, int"))
--   local d = assert(pd.gpu.array(pd.linspace(0, 1, 100)))
--   assert(k:launch(1, 128, d, 100))
--   local x = assert(d:tohost())
--
-- Devices are numbered from 0, as CUDA numbers them.  Each Lua state uses
-- one device at a time: pd.gpu.device() tells which (a GPU worker of
-- pd.map{gpus=} is bound to its own through PDLUA_GPU_DEVICE), pd.gpu.use(i)
-- changes it.  Modules are loaded on the device in use when a kernel is
-- first taken from them; buffers and kernels stay on the device they were
-- made on.
local core = require "pd.core"
local native = require "pd.core.gpu"
local A = require "pd.core.array"

local M = {}

local device do
  local e = os.getenv("PDLUA_GPU_DEVICE")
  device = e and tonumber(e) and math.floor(tonumber(e)) or 0
end

--- The device this Lua state uses (0-based).  In a GPU worker of
-- pd.map{gpus = n} / pd.minimize{gpus = n}, the device it is bound to.
function M.device() return device end

--- Use device i (0-based) from now on in this Lua state.  Returns true, or
-- nil and the reason (no GPU, no such device).
function M.use(i)
  if math.type and math.type(i) ~= "integer" and not (type(i) == "number" and i % 1 == 0) then
    error("bad argument #1 to 'use' (device index expected)", 2)
  end
  local devs, why = native.devices()
  if not devs or #devs == 0 then return nil, why end
  if i < 0 or i >= #devs then
    return nil, string.format("no device %d (there are %d, numbered from 0)", i, #devs)
  end
  device = math.floor(i)
  return true
end

--- The driver's version ("13.0"), or nil and the reason.
function M.driver() return native.driver() end

--- true, or false and the reason ("not available: no CUDA driver (...)").
function M.available() return native.available() end

--- List of devices: {name=, memory= (bytes), cc= "9.0", arch= "90", sms=, index=}.
-- Empty (and the reason as a second value) when there is none.
function M.devices() return native.devices() end

--- NVRTC's version ("13.0") and the library's path, or nil and the reason.
function M.nvrtc() return native.nvrtc() end

-- ---- the compile cache -------------------------------------------------------

local function cache_dir()
  local d = os.getenv("PDLUA_CACHE")
  if not d or d == "" then
    local x = os.getenv("XDG_CACHE_HOME")
    if x and x ~= "" then d = x .. "/pdlua"
    else
      local home = os.getenv("HOME")
      if not home or home == "" then return nil end
      d = home .. "/.cache/pdlua"
    end
  end
  return d .. "/gpu"
end

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Write atomically (temporary name, then rename); a failure only costs the
-- cache, never the compile.
local function write_cache(dir, name, data)
  os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null")
  local tmp = string.format("%s/.%s.%d.tmp", dir, name, math.random(1, 1e9))
  local f = io.open(tmp, "wb")
  if not f then return end
  local ok = f:write(data)
  f:close()
  if ok then os.rename(tmp, dir .. "/" .. name) else os.remove(tmp) end
end

-- ---- modules -------------------------------------------------------------------

local Module = {}
Module.__index = Module
Module.__name = "pd.GpuModule"

function Module:__tostring()
  return string.format("pd.GpuModule(%s, %d bytes%s)", self.arch, #self.image,
                       self.cached and ", from cache" or "")
end

--- The PTX text of a module compiled for compute_XY (nil for a CUBIN).
function Module:ptx()
  if self.kind == "ptx" then return self.image end
  return nil
end

--- The compiled image (PTX text or CUBIN bytes).
function Module:binary() return self.image end

--- A kernel of this module on the device in use (pd.gpu.device()), for
-- kernel:launch(grid, block, args...).  signature lists the kernel's
-- argument types in C ("double*, int", or {"double*", "int"}): pointers
-- take pd.gpu arrays of that element type, scalars take numbers.  Returns
-- the kernel, or nil and the reason (no device, the image does not load
-- there, no kernel of that name).  A signature that names an unknown type,
-- or (drivers 12.4+) does not match the compiled kernel, raises.
function Module:kernel(name, signature)
  if type(name) ~= "string" then error("bad argument #1 to 'kernel' (string expected)", 2) end
  if type(signature) ~= "string" and type(signature) ~= "table" then
    error("bad argument #2 to 'kernel' (signature expected, e.g. \"double*, int\")", 2)
  end
  local ok, why = native.available()
  if not ok then return nil, why end
  local dev = device
  local skey = type(signature) == "table" and table.concat(signature, ",") or signature
  local kkey = dev .. "\0" .. name .. "\0" .. skey
  if self.kernels[kkey] then return self.kernels[kkey] end
  local h = self.loaded[dev]
  if not h then
    local err
    h, err = native.load(dev, self.image)
    if not h and self.fallback then
      local ptx = self.fallback()
      if ptx then
        local h2, err2 = native.load(dev, ptx.image)
        if h2 then h = h2 else err = err .. "; and the PTX fallback: " .. tostring(err2) end
      end
    end
    if not h then
      return nil, string.format("loading the %s for %s on device %d: %s", self.kind, self.arch,
                                dev, err)
    end
    self.loaded[dev] = h
  end
  local ok2, k, err = pcall(native.kernel, h, name, signature)
  if not ok2 then error(k, 2) end      -- a bad signature: the caller's line
  self.kernels[kkey] = k
  return k, err
end

-- Modules compiled in this Lua state, by cache key: compiling the same
-- source again (a fitness function called every generation in a worker)
-- gives the same module, with its images loaded and kernels made.
local compiled = {}

-- The device in use decides (a node's GPUs need not be alike).
local function default_arch()
  local devs, why = native.devices()
  if not devs or #devs == 0 then
    return nil, "pd.gpu.compile: no device to compile for (" .. tostring(why) ..
                "); give arch = 'compute_XY' to compile PTX without one"
  end
  local d = devs[device + 1] or devs[1]
  return "sm_" .. d.arch, "compute_" .. d.arch
end

--- Compile CUDA C++ source with NVRTC.  opts: arch ("sm_90" gives a CUBIN,
-- "compute_90" PTX; default the first device's exact sm_XY, with PTX as
-- fallback), options (list of NVRTC flags).  Results are cached on disk by
-- the hash of NVRTC's version, arch, options and source.  Returns a module,
-- or nil and the reason (the compiler's log for a compile error).
function M.compile(source, opts)
  if type(source) ~= "string" then
    error("bad argument #1 to 'compile' (CUDA source string expected)", 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #2 to 'compile' (table expected)", 2) end
  local options = opts.options or {}
  if type(options) ~= "table" then error("bad option 'options' (list of strings expected)", 2) end
  local version, why = native.nvrtc()
  if not version then return nil, why end
  local arch, fallback = opts.arch, nil
  if not arch then
    arch, fallback = default_arch()
    if not arch then return nil, fallback end
  elseif type(arch) ~= "string" or not (arch:match("^sm_%d+a?$") or arch:match("^compute_%d+a?$")) then
    error("bad option 'arch' (want 'sm_XY' or 'compute_XY', got " .. tostring(arch) .. ")", 2)
  end
  local function build(a)
    local key = core.sha256(table.concat({ "pdlua-gpu-1", version, a,
                                           table.concat(options, "\0"), source }, "\0"))
    if compiled[key] then return compiled[key] end
    local dir = cache_dir()
    local kind = a:match("^sm_") and "cubin" or "ptx"
    local name = key .. "." .. kind
    local image = dir and read_all(dir .. "/" .. name)
    local cached = image ~= nil and #image > 0
    local log
    if not cached then
      image, log = native.compile(source, a, options)
      if not image then return nil, log end
      if dir then write_cache(dir, name, image) end
    end
    local mod = setmetatable({ arch = a, kind = kind, image = image, cached = cached,
                               hash = key, log = log, loaded = {}, kernels = {} }, Module)
    compiled[key] = mod
    return mod
  end
  local mod, err = build(arch)
  if not mod and fallback then return build(fallback) end
  -- a CUBIN the driver refuses (NVRTC newer than the driver knows, a
  -- device of another architecture) is retried as PTX when a kernel is
  -- first taken: Module:kernel
  if mod and fallback then
    -- its own object: the same source compiled for an explicit arch is not retried
    local key = mod.hash .. "\0auto"
    if not compiled[key] then
      local auto = setmetatable({ loaded = {}, kernels = {} }, Module)
      for _, f in ipairs { "arch", "kind", "image", "cached", "hash", "log" } do auto[f] = mod[f] end
      auto.fallback = function() return build(fallback) end
      compiled[key] = auto
    end
    return compiled[key], err
  end
  return mod, err
end

--- A module from an image compiled elsewhere: PTX text (from nvcc -ptx or
-- NVRTC) or CUBIN bytes.  No compiler needed; the driver checks it when a
-- kernel is first taken.
function M.load(image)
  if type(image) ~= "string" or #image == 0 then
    error("bad argument #1 to 'load' (PTX or CUBIN string expected)", 2)
  end
  local kind = image:sub(1, 4) == "\127ELF" and "cubin" or "ptx"
  local arch = kind == "ptx" and (image:match("%.target%s+([%w_]+)") or "ptx") or "cubin"
  return setmetatable({ arch = arch, kind = kind, image = image, cached = false,
                        hash = core.sha256(image), loaded = {}, kernels = {} }, Module)
end

-- ---- device arrays ----------------------------------------------------------

local DTYPES = { f64 = true, f32 = true, i32 = true, i64 = true, u8 = true }

--- A device copy of a pd.array, or of a Lua list (made into a pd.array of
-- dtype, default "f64"), on the device in use: one copy of the bytes, no
-- Lua loop.  A pd.array of another dtype than `dtype` is converted first;
-- a view is packed first.  Returns the device array, or nil and the reason.
function M.array(a, dtype)
  if dtype ~= nil and not DTYPES[dtype] then
    error("bad argument #2 to 'array' (dtype f64, f32, i32, i64 or u8 expected)", 2)
  end
  if type(a) == "table" then
    a = A.array(a, dtype or "f64")
  elseif A.isarray(a) then
    if dtype and a:dtype() ~= dtype then a = a:astype(dtype) end
    if not a:iscontiguous() then a = a:copy() end
  else
    error("bad argument #1 to 'array' (pd.array or list of numbers expected, got " .. type(a) .. ")", 2)
  end
  local ok, why = native.available()
  if not ok then return nil, why end
  return native.array(device, a)
end

--- A zero-filled device array of n elements (or n rows of m), dtype
-- default "f64": pd.gpu.zeros(n [, m] [, dtype]).  nil and the reason
-- without a device or memory.
function M.zeros(n, m, dtype)
  if type(m) == "string" then m, dtype = nil, m end
  dtype = dtype or "f64"
  if not DTYPES[dtype] then error("bad argument to 'zeros' (dtype f64, f32, i32, i64 or u8 expected)", 2) end
  if type(n) ~= "number" or n < 0 or n % 1 ~= 0 then error("bad argument #1 to 'zeros' (size expected)", 2) end
  if m ~= nil and (type(m) ~= "number" or m < 0 or m % 1 ~= 0) then
    error("bad argument #2 to 'zeros' (size expected)", 2)
  end
  local ok, why = native.available()
  if not ok then return nil, why end
  return native.empty(device, dtype, math.floor(n), m and math.floor(m) or nil)
end

--- Wait for every kernel launched on the device in use.  true, or nil and
-- the reason (a kernel that faulted: the device is then unusable in this
-- process, as CUDA leaves a context after such a fault).
function M.sync()
  local ok, why = native.available()
  if not ok then return nil, why end
  return native.sync(device)
end

--- Free and total memory of the device in use, in bytes; nil and the reason.
function M.meminfo()
  local ok, why = native.available()
  if not ok then return nil, why end
  return native.meminfo(device)
end

--- Why this process cannot run GPU work, or nil when it can: what pd.map
-- and pd.minimize check before starting GPU workers.
function M.unusable(n)
  local devs, why = native.devices()
  if not devs or #devs == 0 then return why or "not available" end
  if n and n > #devs then
    return string.format("%d GPUs asked for, this machine has %d", n, #devs)
  end
  return nil
end

return M
