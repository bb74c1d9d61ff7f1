--- pd.optim: the optimisation toolbox behind pd.minimize and pd.maximize.
--
-- Rebuilt from Playdoh's (see pd.optim.driver) around ask-and-tell
-- optimisers, each behind pd.optim.registry (where the contract they
-- fulfil is written):
--   pd.optim.cmaes   CMA-ES as pycma 4 computes it, IPOP/BIPOP restarts
--   pd.optim.pso     SPSO-2011
--   pd.optim.ga      real-coded GA (tournament, SBX, polynomial mutation,
--                    elitism) with islands and migration
-- This module is the public face: minimize and maximize (the run:
-- pd.optim.driver; its parts pd.optim.space, .evaluate, .checkpoint), the
-- ask-and-tell constructors pd.optim.NAME{...} of every registered
-- algorithm, the native kernels' Lua side (la), and the error check.  An
-- optimiser's refusal (the fitness raised, or gave a non-number) is a
-- pd.error object with origin "optim".  See docs/optimisation.md.
local la = require "pd.optim.la"
local perror = require "pd.error"
local registry = require "pd.optim.registry"
local space = require "pd.optim.space"
local driver = require "pd.optim.driver"

local M = {}
M.la = la

--- The metatable of pdlua's error objects (pd.error's, shared by all parts).
M.Error = perror.Error

--- True when v is an error object raised by pd.optim.
function M.iserror(v) return perror.is(v) and v.origin == "optim" end

-- One thread for BLAS while the optimiser runs (see la.single_thread);
-- errors pass through unchanged.
local function run1(f, spec, sign)
  local restore = la.single_thread()
  local ok, r = pcall(driver.run, f, spec, sign)
  restore()
  if not ok then error(r, 0) end
  return r
end

--- Minimise f over the space of spec; see docs/optimisation.md.
function M.minimize(f, spec) return run1(f, spec, 1) end

--- Maximise f: minimise -f, and report f's own values.
function M.maximize(f, spec) return run1(f, spec, -1) end

---------------------------------------------------------------------------
-- Ask-and-tell objects: pd.optim.cmaes{dim=, bounds=, ...}
---------------------------------------------------------------------------

local function ask_tell(name)
  return function(spec)
    local S = space.parse(spec)
    local rng = la.rng(spec.seed or 0, 1)
    local o = registry.make(name, S, spec, rng, spec.budget, spec.target)
    o.maxiter = spec.maxiter or o.maxiter
    return o
  end
end
for _, name in ipairs(registry.names()) do M[name] = ask_tell(name) end

-- an algorithm registered later has its constructor too
setmetatable(M, { __index = function(t, name)
  if type(name) == "string" and registry.get(name) then
    local c = ask_tell(name)
    rawset(t, name, c)
    return c
  end
end })

return M
