--- pd.worker: the body of a local worker process.
--
-- Started by the coordinator as `pdlua -e "require('pd.worker')"` with its
-- end of a socketpair on fd 3 (PDLUA_WORKER_FD).  One Lua state; the loop
-- (pd.core.map.worker, C) never returns: it exits when the coordinator's end
-- closes, and dies with the coordinator (PR_SET_PDEATHSIG).
local pd = require "pd"
local cmap = require "pd.core.map"
local map = require "pd.map"

cmap.set_pd(pd)
-- LuaJIT: a coordinator that loaded a 5.2+ compatibility layer (compat53,
-- or busted's under the specs) names `unpack` table.unpack in what it
-- sends (pd.optim's fitness wrappers hold it); let that name resolve here.
if table.unpack == nil and unpack then table.unpack = unpack end  -- luacheck: ignore
-- pd.random.rng() inside a task is the task's stream too
require("pd.random").rng = map.rng
cmap.worker(map._unpack)
