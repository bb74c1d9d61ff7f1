-- bench/map/pdlua_bench.lua: pd.map's side of bench/map, one measurement per run.
-- Usage: pdlua run --cpus 2 --no-progress pdlua_bench.lua TEST [N]
--   TEST: tput, lat, cpu, cold, mem, mem1m, lb (see peers.py for the peers' side)
-- Prints one JSON object (same fields as peers.py).
local pd = require "pd"
local cmap = require "pd.core.map"
local now = require("pd.core").now
local test, n = arg[1], tonumber(arg[2] or "100000")

local function json(t)
  local parts = {}
  for k, v in pairs(t) do
    parts[#parts + 1] = string.format("%q: %s", k, type(v) == "number" and string.format("%.6g", v)
                                      or string.format("%q", tostring(v)))
  end
  print("{" .. table.concat(parts, ", ") .. "}")
end

local function noop(x) return x end

local function burn(k)
  local s = 0
  for i = 0, k - 1 do s = s + (i * i) % 7 end
  return s
end

local function calibrate()
  local k = 100000
  while true do
    local t0 = now()
    burn(k)
    local dt = now() - t0
    if dt > 0.003 then return math.floor(k * 0.010 / dt) end
    k = k * 2
  end
end

local out = { system = "pdlua", test = test }
if test == "cold" then
  local t0 = now()
  pd.map(noop, { 1 })
  out.seconds = now() - t0
  json(out)
  return
end
pd.map(noop, { 1, 2, 3, 4 }, { chunk = 1 })           -- warm: both workers up
if test == "tput" then
  local xs = {}
  for i = 1, n do xs[i] = i end
  pd.map(noop, xs)                                     -- warm the batch sizing path
  local t0 = now(); pd.map(noop, xs); local d = now() - t0
  out.best, out.best_variant = n / d, "pd.map default options"
  t0 = now(); pd.map(noop, xs, { chunk = 1 }); d = now() - t0
  out.one, out.one_variant = n / d, "pd.map chunk = 1"
elseif test == "lat" then
  local ts = {}
  for i = 1, 2200 do
    local t0 = now()
    pd.map(noop, { i })
    if i > 200 then ts[#ts + 1] = now() - t0 end
  end
  table.sort(ts)
  out.median_us, out.variant = ts[#ts // 2] * 1e6, "pd.map(f, {x})"
elseif test == "cpu" then
  local k = calibrate()
  local ks = {}
  for i = 1, 200 do ks[i] = k end
  local t0 = now()
  for i = 1, 200 do burn(k) end
  local serial = now() - t0
  t0 = now()
  pd.map(burn, ks)
  local par = now() - t0
  out.serial, out.parallel, out.speedup, out.variant = serial, par, serial / par, "pd.map default"
elseif test == "mem" then
  local function pss(pid)
    for l in io.lines("/proc/" .. pid .. "/smaps_rollup") do
      local kb = l:match("^Pss:%s+(%d+)")
      if kb then return tonumber(kb) end
    end
    return 0
  end
  local w, wp = 0, 0
  for _, pid in ipairs(require("pd.session").pids()) do
    w = math.max(w, (cmap.rss(pid)))
    wp = math.max(wp, pss(pid))
  end
  out.worker_kb = w / 1024
  out.worker_pss_kb = wp
  out.coord_kb = cmap.rss() / 1024
elseif test == "lb" then
  -- dynamic load balancing: worker 1 runs each task 4x slower than worker 2
  -- (1 ms against 4 ms of spinning); an even split would take 100 x 4 ms.
  local pids = require("pd.session").pools().default:pids()
  local slow = pids[1]
  local xs = {}
  for i = 1, 200 do xs[i] = i end
  local t0 = now()
  local r = pd.map(function()
    local me = require("pd.core.map").getpid()
    local c = now()
    while now() - c < (me == slow and 0.004 or 0.001) do end
    return me
  end, xs)
  local el = now() - t0
  local nslow = 0
  for i = 1, r.n do if r[i] == slow then nslow = nslow + 1 end end
  -- ideal: rates 250/s and 1000/s share 200 tasks in 200/1250 s = 0.16 s
  out.slow_tasks, out.fast_tasks, out.seconds, out.ideal = nslow, r.n - nslow, el, 0.16
elseif test == "mem1m" then
  local xs = {}
  for i = 1, 1000000 do xs[i] = i + 0.5 end
  local r = pd.map(noop, xs)
  assert(r.n == 1000000 and r[1000000] == 1000000.5)
  local _, hwm = cmap.rss()
  out.coord_peak_kb = hwm / 1024
end
json(out)
