-- bench/cluster/bench.lua: one configuration's numbers for bench/cluster/run.sh.
-- Usage: pdlua run bench.lua N [pdlua run flags: --cpus, --nodes, --secret-file, --tls-ca]
-- Prints: tput=<tasks/s> lat=<median seconds of a 1-task map> cpu=<seconds for 40 x 10 ms>
--         cold=<seconds from nothing to the first map's results: connect, handshake, workers>
local pd = require "pd"
local now = require("pd.core").now
local n = tonumber(arg[1] or "50000")

local function noop(x) return x end
local function burn(s) local t = os.clock() + s; while os.clock() < t do end; return s end

-- cold: connect (and prove the secret, and TLS), start the workers, one map
local c0 = now()
pd.map(noop, { 1, 2, 3, 4, 5, 6, 7, 8 }, { chunk = 1 })
local cold = now() - c0

local xs = {}
for i = 1, n do xs[i] = i end
pd.map(noop, xs)                                     -- warm the batch sizing path
local t0 = now()
local r = pd.map(noop, xs)
local tput = n / (now() - t0)
assert(r.n == n and r[n] == n)

local ts = {}
for i = 1, 300 do
  local t1 = now()
  pd.map(noop, { i })
  if i > 50 then ts[#ts + 1] = now() - t1 end
end
table.sort(ts)
local lat = ts[math.floor(#ts / 2)]

local ws = {}
for i = 1, 40 do ws[i] = 0.01 end
t0 = now()
pd.map(burn, ws, { chunk = 1 })
local cpu = now() - t0

print(string.format("tput=%.1f lat=%.6f cpu=%.4f cold=%.4f", tput, lat, cpu, cold))
