--- pd.worker: the body of a local worker process.
--
-- Started by the coordinator as `pdlua -e "require('pd.worker')"` with its
-- end of a socketpair on fd 3 (PDLUA_WORKER_FD).  One Lua state; the loop
-- (pd.core.map.worker, C) never returns: it exits when the coordinator's end
-- closes, and dies with the coordinator (PR_SET_PDEATHSIG).
--
-- A worker loads as little as it can before its first task (cold start and
-- idle RSS, bench/map (d) and (e)): pd.jobload to unpack a job, not pd.map;
-- pd.random and pd.map only when a task uses them.
local pd = require "pd"
local cmap = require "pd.core.map"

cmap.set_pd(pd)
-- LuaJIT: a coordinator that loaded a 5.2+ compatibility layer (compat53,
-- or busted's under the specs) names `unpack` table.unpack in what it
-- sends (pd.optim's fitness wrappers hold it); let that name resolve here.
if table.unpack == nil and unpack then table.unpack = unpack end  -- luacheck: ignore

-- pd.random.rng() inside a task is the task's stream too (pd.map's rng):
-- patched in when a task first requires pd.random.
-- (The real module is found through the other searchers: a nested require
-- of the same name fails under LuaJIT.)
package.preload["pd.random"] = function(name)
  package.preload[name] = nil
  for _, search in ipairs(package.searchers or package.loaders) do
    local load, extra = search(name)
    if type(load) == "function" then
      local m = load(name, extra)
      m.rng = function() return require("pd.map").rng() end
      return m
    end
  end
  error("module '" .. name .. "' not found", 2)
end

cmap.worker(require "pd.jobload")
