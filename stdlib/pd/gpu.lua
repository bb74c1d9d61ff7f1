--- pd.gpu: CUDA kernels given as source, compiled at run time.
--
-- Nothing in pdlua links against CUDA: the driver (libcuda.so.1) and NVRTC
-- are found when first asked for (see docs/gpu.md for where).  Without them
-- every call answers plainly: `available()` gives false and the reason,
-- calls that need a device return nil and the reason.
--
--   local mod = assert(pd.gpu.compile(src))            -- for the devices here
--   local mod = assert(pd.gpu.compile(src, {arch = "compute_90"}))  -- PTX, no GPU needed
local core = require "pd.core"
local native = require "pd.core.gpu"

local M = {}

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

--- A kernel of this module, for launching on a device.
function Module:kernel(name, signature)
  if type(name) ~= "string" then error("bad argument #1 to 'kernel' (string expected)", 2) end
  if type(signature) ~= "string" and type(signature) ~= "table" then
    error("bad argument #2 to 'kernel' (signature expected, e.g. \"double*, int\")", 2)
  end
  local ok, why = native.available()
  if not ok then return nil, why end
  return nil, "pd.gpu: launching kernels is not built yet"
end

local function default_arch()
  local devs, why = native.devices()
  if not devs or #devs == 0 then
    return nil, "pd.gpu.compile: no device to compile for (" .. tostring(why) ..
                "); give arch = 'compute_XY' to compile PTX without one"
  end
  return "sm_" .. devs[1].arch, "compute_" .. devs[1].arch
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
    return setmetatable({ arch = a, kind = kind, image = image, cached = cached,
                          hash = key, log = log }, Module)
  end
  local mod, err = build(arch)
  if not mod and fallback then mod, err = build(fallback) end
  return mod, err
end

return M
