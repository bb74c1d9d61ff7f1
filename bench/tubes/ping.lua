-- bench/tubes/ping.lua: the ping-pong task of bench/tubes (run.lua on one
-- machine, remote.lua across nodes).  Node 1 sends self.v to node 2 through
-- tube "a", node 2 sends it back through "b", self.reps times after 10 to
-- warm up; each node returns { seconds per round trip (node 1; 0 for node
-- 2), its node name }.  Loaded with dofile, so that the task travels by
-- value (a module's table would travel by name, and nodes started elsewhere
-- do not have bench/ on their path).
local Ping = {}
function Ping:run()
  local clock = require("pd.core").now
  local v, n = self.v, self.reps
  if self.index == 1 then
    for _ = 1, 10 do self:push("a", v); self:pop("b") end
    local t = clock()
    for _ = 1, n do self:push("a", v); self:pop("b") end
    return { (clock() - t) / n, os.getenv("PDLUA_NODE_NAME") }
  end
  for _ = 1, n + 10 do self:push("b", self:pop("a")) end
  return { 0, os.getenv("PDLUA_NODE_NAME") }
end
Ping.tubes = { { "a", 1, 2 }, { "b", 2, 1 } }
return Ping
