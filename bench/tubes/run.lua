-- bench/tubes: tube latency and bandwidth between two nodes of a task set,
-- beside the floors they are measured against (a bare pipe, bare nng round
-- trips: bench/tubes/floors.c), and the heat equation's speed-up on 2 cores.
--
--   build/pdlua run bench/tubes/run.lua [--quick] [--heat N STEPS]
--
-- Goals: on one machine, round trip within 3x of a bare pipe's and
-- large-array bandwidth at least half a bare pipe's; across loopback nodes
-- within 1.5x of a bare nng tcp round trip; heat at least 1.8x faster on 2
-- cores than on 1 for a large enough grid.  Every figure is the best of 3
-- runs, tube and floor measured back to back, so that a busy machine hurts
-- both alike; the load average is printed with them.
local pd = require "pd"
local now = require("pd.core").now

local quick, heat_n, heat_steps = false, 1200, 100
local i = 1
while arg and arg[i] do
  if arg[i] == "--quick" then quick = true; heat_n, heat_steps = 400, 50
  elseif arg[i] == "--heat" then heat_n, heat_steps = tonumber(arg[i + 1]), tonumber(arg[i + 2]); i = i + 2 end
  i = i + 1
end
pd.init { cpus = 2 }

local build = (pd.options().build or (require("pd.core").exe() or "build/pdlua"):match("^(.*)/[^/]*$"))
local floors = build .. "/bench/bench_tubes_floors"

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local s = p:read("*a")
  p:close()
  return s
end

local function floor_of(args)
  return tonumber(sh(floors .. " " .. args)) or error("floors " .. args .. " failed")
end

local function best(f, times)
  local b = math.huge
  for _ = 1, times or 3 do b = math.min(b, f()) end
  return b
end

local Ping = dofile("bench/tubes/ping.lua")

-- Seconds per round trip of v between two nodes here, measured in node 1.
local function tube_rtt(v, reps)
  Ping.v, Ping.reps = v, reps
  return pd.tasks(Ping, { count = 2, tubes = Ping.tubes })[1][1]
end

local function load()
  local f = io.open("/proc/loadavg")
  local s = f and f:read("*l") or "?"
  if f then f:close() end
  return s:match("^(%S+)") or "?"
end

print(string.format("bench/tubes: %s, %d CPUs online, load average %s",
                    pd.vm, require("pd.core.map").machine(), load()))
print()
print("one machine: two nodes of a task set, tubes are pipes")
local reps = quick and 2000 or 10000
local rtt_tube = best(function() return tube_rtt(1, reps) end)
local rtt_pipe = best(function() return floor_of("pipe-rtt " .. reps) end)
local rtt_spin = best(function() return floor_of("pipe-spin-rtt " .. reps) end)
local rtt_ipc = best(function() return floor_of("nng-rtt ipc:///tmp/pdlua-bench-" .. os.time() .. ".ipc " .. math.floor(reps / 5)) end)
local rtt_tcp = best(function() return floor_of("nng-rtt tcp://127.0.0.1:" .. (20000 + os.time() % 20000) .. " " .. math.floor(reps / 5)) end)
print(string.format("  round trip (a number)  tube %7.1f us   pipe %6.1f us   ratio %.2f (goal <= 3)",
                    rtt_tube * 1e6, rtt_pipe * 1e6, rtt_tube / rtt_pipe))
print(string.format("  a pipe whose readers spin 50 us before sleeping, as a blocked pop does: %.1f us (tube / this %.2f)",
                    rtt_spin * 1e6, rtt_tube / rtt_spin))
print(string.format("  floors                 nng ipc %6.1f us   nng tcp %6.1f us", rtt_ipc * 1e6,
                    rtt_tcp * 1e6))
print()
print("  bandwidth (an f64 array there and back; MB/s counts both ways)")
print("      size        tube MB/s   pipe MB/s   ratio")
local sizes = { 8, 1024, 65536, 1048576, 8388608, 67108864 }
if quick then sizes = { 8, 65536, 1048576, 8388608 } end
for _, size in ipairs(sizes) do
  local r = size >= (8388608) and 5 or (size >= (1048576) and 20 or 2000)
  if quick then r = math.max(3, math.floor(r / 4)) end
  local v = pd.zeros(math.max(1, math.floor(size / 8)))
  local t = best(function() return tube_rtt(v, r) end)
  local p = best(function() return floor_of("pipe-bw " .. size .. " " .. r) end)
  print(string.format("  %10d  %10.2f  %10.2f   %5.2f%s", size, 2 * size / t / 1e6, 2 * size / p / 1e6,
                      p / t, size >= (8388608) and "  (goal >= 0.5)" or ""))
end
print()
print("across two loopback nodes: `pdlua serve` x 2, tubes are tcp sockets between their workers")
do
  local exe = require("pd.core").exe()
  local nodes, pids = {}, {}
  for i = 1, 2 do
    local out = os.tmpname()
    local p = io.popen(string.format("%s serve --listen tcp://127.0.0.1:0 --cpus 1 --name bench%d "
                                     .. ">%s 2>&1 & echo $!", exe, i, out))
    pids[i] = p:read("*l")
    p:close()
    local url
    local t0 = now()
    repeat
      local f = io.open(out)
      url = f and f:read("*a"):match("listening on (%S+)")
      if f then f:close() end
      if not url then os.execute("sleep 0.05") end
    until url or now() - t0 > 10
    os.remove(out)
    nodes[i] = url
  end
  if nodes[1] and nodes[2] then
    local reps2 = quick and 500 or 2000
    local r = sh(string.format("%s run bench/tubes/remote.lua %d --cpus 0 --nodes %s,%s 2>&1", exe,
                               reps2, nodes[1], nodes[2]))
    local t, bw, where = r:match("rtt (%S+) bw (%S+) where ([^\n]*)")
    local tcp = best(function() return floor_of("nng-rtt tcp://127.0.0.1:" .. (30000 + os.time() % 20000) .. " " .. reps2) end)
    if t then
      print(string.format("  round trip (a number)  tube %7.1f us   nng tcp %6.1f us   ratio %.2f (goal <= 1.5)",
                          tonumber(t) * 1e6, tcp * 1e6, tonumber(t) / tcp))
      print(string.format("  8 MiB array there and back: %.0f MB/s   (nodes: %s)", tonumber(bw), where))
    else
      print("  failed: " .. r)
    end
  else
    print("  could not start two nodes")
  end
  for _, pid in ipairs(pids) do if pid then os.execute("kill " .. pid .. " 2>/dev/null") end end
end
print()
-- The heat equation: examples/heat.lua times one node and two nodes in the
-- same run, back to back.  On a shared machine the speed of a core changes
-- from one second to the next, so the figure is the median of HEAT_RUNS
-- runs' own speed-ups (each run's two timings share its moment), for a grid
-- of 400 x 400 (a strip and its scratch about 1.3 MB: L2 is 1 MB a core
-- here) and the big grid (23 MB with its scratch: in the 32 MB L3).
local HEAT_RUNS = quick and 3 or 7
local function heat(n, steps)
  print(string.format("heat equation, %dx%d grid, %d steps (examples/heat.lua), median of %d runs",
                      n, n, steps, HEAT_RUNS))
  local ratios, ceilings, last = {}, {}, nil
  local exe = require("pd.core").exe()
  local alone = string.format("%s run bench/tubes/heat_alone.lua %d", exe, n)
  for _ = 1, HEAT_RUNS do
    -- the machine's own ceiling at this moment: one process on the whole
    -- grid, then two at once on half of it each (no tubes, no pdlua tasks)
    local one = tonumber(sh(string.format("%s %d %d", alone, n - 2, steps)))
    local half = math.floor((n - 2) / 2)
    local two = sh(string.format("(%s %d %d & %s %d %d; wait)", alone, half, steps,
                                 alone, n - 2 - half, steps))
    local slowest = 0
    for t in two:gmatch("[%d.]+") do slowest = math.max(slowest, tonumber(t)) end
    if one and slowest > 0 then ceilings[#ceilings + 1] = one / slowest end
    local out = sh(string.format("%s run examples/heat.lua %d %d 2 --cpus 2 2>&1",
                                 require("pd.core").exe(), n, steps))
    local t1, t2 = out:match("1 node ([%d.]+) s, 2 nodes ([%d.]+) s")
    if not t1 then io.write((out:gsub("^", "  "):gsub("\n(.)", "\n  %1"))); return end
    ratios[#ratios + 1], last = tonumber(t1) / tonumber(t2), out
  end
  io.write((last:gsub("^", "  "):gsub("\n(.)", "\n  %1")))
  local sorted = {}
  for i, r in ipairs(ratios) do sorted[i] = r end
  table.sort(sorted)
  local med = sorted[math.floor((#sorted + 1) / 2)]
  local all = {}
  for i, r in ipairs(ratios) do all[i] = string.format("%.2f", r) end
  print(string.format("  speed-ups of the runs: %s", table.concat(all, " ")))
  print(string.format("  median speed-up on 2 cores %.2fx (parallel efficiency %.0f%%, goal >= 1.8x)",
                      med, 50 * med))
  if #ceilings > 0 then
    table.sort(ceilings)
    local c = ceilings[math.floor((#ceilings + 1) / 2)]
    print(string.format("  this machine's ceiling for the same steps with nothing exchanged (two processes on"
                        .. " half the grid each against one on all of it): median %.2fx (%.2f to %.2f);"
                        .. " pdlua's median is %.0f%% of it", c, ceilings[1], ceilings[#ceilings], 100 * med / c))
  end
end
if quick then heat(heat_n, heat_steps)
else
  heat(400, 400)
  heat(heat_n, heat_steps)
end
