--- pd: the front end of pdlua, loaded with `local pd = require "pd"`.
--
-- Parts load on first use (`pd.codec`, `pd.optim`, ...), so `require "pd"`
-- stays cheap for scripts that use one corner of it.  The native side is
-- `pd.core` (C); everything a user calls is defined in stdlib/pd/*.lua.
local core = require "pd.core"

local pd = {
  version = core.version,   -- "0.1.0"
  vm = core.vm,             -- "Lua 5.4.4" or "LuaJIT 2.1..."
}

-- Submodules resolved lazily: pd.<name> -> require("pd.<name>").
local lazy = {
  pretty = "pd.pretty",
  codec = "pd.codec",
  gpu = "pd.gpu",
  optim = "pd.optim",
}

setmetatable(pd, {
  __index = function(t, k)
    local m = lazy[k]
    if m == nil then return nil end
    local v = require(m)
    rawset(t, k, v)
    return v
  end,
})

-- Arrays: the constructors are C and cheap to open, so they are set
-- here; pd.linalg, pd.math, pd.random load on first use.
do
  local A = require "pd.core.array"
  for _, k in ipairs { "array", "zeros", "ones", "full", "eye", "range", "linspace", "isarray" } do
    pd[k] = A[k]
  end
  lazy.linalg, lazy.math, lazy.random = "pd.linalg", "pd.math", "pd.random"
end

--- Minimise / maximise f over a search space (pd.optim; docs/optimisation.md).
function pd.minimize(f, spec) return pd.optim.minimize(f, spec) end
function pd.maximize(f, spec) return pd.optim.maximize(f, spec) end

-- pd.map (stdlib/pd/map.lua) and the session (stdlib/pd/session.lua),
-- loaded on first use.  pd.rng is map's: inside a task it is the task's
-- pd.random stream.
for _, name in ipairs { "map", "map_async", "jobs", "job", "rng" } do
  pd[name] = function(...) return require("pd.map")[name](...) end
end
for _, name in ipairs { "init", "shutdown", "nodes" } do
  pd[name] = function(...) return require("pd.session")[name](...) end
end

-- pd.tasks, pd.tasks_async (stdlib/pd/tasks.lua) and pd.topology, on first use.
for _, name in ipairs { "tasks", "tasks_async" } do
  pd[name] = function(...) return require("pd.tasks")[name](...) end
end
lazy.topology = "pd.topology"

--- pd.iserror(v) -> true when v is one of pdlua's error objects: a failed
-- task's (pd.map) or an optimiser's (pd.optim), or any whose metatable has
-- __pd_error = true.  One check for all parts; pd.optim.iserror tells an
-- optimiser's apart.  Loads nothing.
function pd.iserror(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__pd_error") == true
end

--- The flags `pdlua run` was started with (cpus, gpus, nodes, seed, ...),
-- as a fresh table; empty under plain lua5.4.
function pd.options() return core.options() end

return pd
