-- bench/tubes/remote.lua: the round trip of a number and the bandwidth of an
-- 8 MiB array between two nodes of a task set on two machines (loopback
-- `pdlua serve` nodes started by bench/tubes/run.lua), and the bare nng tcp
-- floor.  Run as: pdlua run bench/tubes/remote.lua REPS --cpus 0 --nodes A,B
local pd = require "pd"
local reps = tonumber(arg[1]) or 2000
local nodes = pd.options().nodes or {}
if type(nodes) == "string" then
  local t = {}
  for u in nodes:gmatch("[^,]+") do t[#t + 1] = u end
  nodes = t
end

local Ping = dofile("bench/tubes/ping.lua")

local function rtt(v, n)
  Ping.v, Ping.reps = v, n
  local best, where = math.huge, nil
  for _ = 1, 3 do
    local r = pd.tasks(Ping, { count = 2, tubes = Ping.tubes, nodes = nodes })
    if r[1][1] < best then best = r[1][1] end
    where = tostring(r[1][2]) .. " <-> " .. tostring(r[2][2])
  end
  return best, where
end

local t1, where = rtt(1, reps)
local size = 8388608
local t2 = rtt(pd.zeros(size / 8), 5)
print(string.format("rtt %.9f bw %.1f where %s", t1, 2 * size / t2 / 1e6, where))
