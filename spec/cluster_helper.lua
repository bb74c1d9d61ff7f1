--- spec/cluster_helper.lua: nodes and coordinators as real processes for
-- the cluster specs.  Every process started here is remembered and killed
-- (and checked gone) by C.cleanup(); waits have deadlines, nothing sleeps
-- and hopes.
local H = require "helper"
local C = {}

C.HB = "0.2"                 -- PDLUA_HEARTBEAT for every process here
C.started = {}               -- pid -> description
C.files = {}                 -- temporary files made here, removed by C.cleanup

-- A new temporary file name (the file exists, empty), removed by C.cleanup.
local function tmp()
  local path = os.tmpname()
  C.files[#C.files + 1] = path
  return path
end

local function slurp(path) return H.read(path) or "" end
C.slurp = slurp

--- Is pid alive (and not a zombie)?
function C.alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return false end
  local line = f:read("*l") or ""
  f:close()
  local st = line:match("%) (%a)")
  return st ~= nil and st ~= "Z" and st ~= "X"
end

--- A path for a flag file through which a test and its job signal each
-- other: not there yet; removed by C.cleanup once made.
function C.flag()
  local path = tmp()
  os.remove(path)
  return path
end

--- Start `cmd` in the background (sh syntax, already quoted) with its
-- output in files.  Returns {pid=, out=, err=}.
function C.spawn(cmd, what)
  local out, err = tmp(), tmp()
  local p = assert(io.popen(cmd .. " >" .. H.q(out) .. " 2>" .. H.q(err) .. " </dev/null & echo $!"))
  local pid = tonumber(p:read("*l"))
  p:close()
  assert(pid, "could not start: " .. cmd)
  C.started[pid] = what or cmd
  return { pid = pid, out = out, err = err }
end

--- Start a node: `pdlua serve` on a free loopback port unless args give
-- --listen.  env: extra "NAME=value" words.  Waits until it listens and
-- returns {pid=, url=, out=, err=, name=}.
function C.node(args, env, chdir)
  args = args or ""
  if not args:match("%-%-listen") then args = "--listen tcp://127.0.0.1:0 " .. args end
  local name = args:match("%-%-name%s+(%S+)")
  local cmd = "env " .. (chdir and ("-C " .. H.q(chdir) .. " ") or "") ..
              "PDLUA_HEARTBEAT=" .. C.HB .. " " .. (env or "") .. " " ..
              H.q(H.pdlua) .. " serve " .. args
  local n = C.spawn(cmd, "node " .. (name or "?"))
  n.name = name
  n.url = H.wait_until(function()
    -- the whole line, so that the url is not cut short by a write in progress
    return slurp(n.out):match("listening on (%S+) [^\n]*\n") or (not C.alive(n.pid) and "dead")
  end, 15)
  assert(n.url and n.url ~= "dead", "node did not start: " .. slurp(n.err))
  return n
end

--- Write a job script; returns its path.
function C.script(text, dir)
  if dir then
    local path = dir .. "/job.lua"
    local f = assert(io.open(path, "wb")); f:write(text); f:close()
    return path
  end
  local path = H.tmpfile(text, ".lua")
  C.files[#C.files + 1] = path
  return path
end

--- Run `pdlua run SCRIPT words` to completion (bounded by `limit` s).
-- Returns stdout, stderr, status.
function C.run(script, words, env, limit)
  return H.sh("env " .. (env or "") .. " PDLUA_HEARTBEAT=" .. C.HB .. " timeout -s KILL " ..
              (limit or 60) .. " " .. H.q(H.pdlua) .. " run " .. H.q(script) .. " " .. (words or ""))
end

local function ppid_of(pid)
  return tonumber(slurp("/proc/" .. pid .. "/stat"):match("%) %a (%d+)"))
end

--- The workers of our node called `name`: processes whose environment
-- holds PDLUA_NODE_NAME=name and whose parent is a node this spec started
-- (other test runs on the machine may use the same names).
function C.workers_of(name)
  local pids = {}
  local p = io.popen("ls /proc")
  for d in p:lines() do
    if d:match("^%d+$") then
      local f = io.open("/proc/" .. d .. "/environ", "rb")
      if f then
        local e = f:read("*a") or ""
        f:close()
        local pid = tonumber(d)
        if e:find("PDLUA_NODE_NAME=" .. name .. "\0", 1, true) and C.alive(pid) and
           C.started[ppid_of(pid) or -1] then
          pids[#pids + 1] = pid
        end
      end
    end
  end
  p:close()
  return pids
end

--- pid, state and command line of each pid (for failure messages).
function C.describe(pids)
  local t = {}
  for _, pid in ipairs(pids) do
    local st = (slurp("/proc/" .. pid .. "/stat"):match("%) (%a)")) or "?"
    local cmd = slurp("/proc/" .. pid .. "/cmdline"):gsub("%z", " ")
    local ppid = slurp("/proc/" .. pid .. "/stat"):match("%) %a (%d+)") or "?"
    t[#t + 1] = pid .. " " .. st .. " ppid " .. ppid .. ": " .. cmd
  end
  return table.concat(t, "\n")
end

--- Kill one process we started (SIGKILL) and wait until it is gone.
function C.kill(pid, sig)
  os.execute("kill -" .. (sig or "KILL") .. " " .. pid .. " 2>/dev/null")
  if (sig or "KILL") == "KILL" then
    assert(H.wait_until(function() return not C.alive(pid) end, 10), "pid " .. pid .. " survived")
    C.started[pid] = nil
  end
end

--- Kill everything still running that we started; assert it is gone.  Remove
-- the temporary files made here.
function C.cleanup()
  for pid in pairs(C.started) do os.execute("kill -CONT " .. pid .. " 2>/dev/null") end
  for pid in pairs(C.started) do os.execute("kill -TERM " .. pid .. " 2>/dev/null") end
  for pid in pairs(C.started) do
    if not H.wait_until(function() return not C.alive(pid) end, 5) then
      os.execute("kill -KILL " .. pid .. " 2>/dev/null")
      H.wait_until(function() return not C.alive(pid) end, 5)
    end
    C.started[pid] = nil
  end
  for _, path in ipairs(C.files) do os.remove(path) end   -- already gone: no matter
  C.files = {}
end

--- A secret file with the given text and mode.
function C.secret(text, mode)
  local path = tmp()
  local f = assert(io.open(path, "wb")); f:write(text .. "\n"); f:close()
  os.execute("chmod " .. (mode or "600") .. " " .. H.q(path))
  return path
end

-- A job that records where each task ran (PDLUA_NODE_NAME is set in a
-- node's workers) and checks its results itself.  arg: N, seconds per task.
C.JOB = [=[
local pd = require "pd"
local n = tonumber(arg[1] or "40")
local spin = tonumber(arg[2] or "0.02")
local list = {}
for i = 1, n do list[i] = i end
local r = pd.map(function(x)
  local t = os.clock() + spin
  while os.clock() < t do end
  return { x * x, os.getenv("PDLUA_NODE_NAME") or "local" }
end, list)
local where = {}
for i = 1, n do
  assert(r[i][1] == i * i, "wrong result at " .. i)
  where[r[i][2]] = (where[r[i][2]] or 0) + 1
end
local names = {}
for k, v in pairs(where) do names[#names + 1] = k .. "=" .. v end
table.sort(names)
print("OK " .. r.n .. " " .. table.concat(names, " "))
]=]

-- For a coordinator script (prepend it): lend(pd, names, pids) maps until
-- every node named has run a task (with pids: and that many worker
-- processes have), bounded.  A node that has joined lends only once a map
-- asks, and its workers start then: a case that needs a node's workers
-- busy, or warm, waits for them this way instead of hoping the job is long
-- enough.  The coordinator keeps its slots 2 s after the work runs out.
C.LEND = [=[
local function lend(pd, names, pids)
  local core = require "pd.core"
  local on, seen, deadline = {}, {}, core.now() + 30
  local function done()
    for _, n in ipairs(names) do if not on[n] then return false end end
    return #seen >= (pids or 0)
  end
  repeat
    local r = pd.map(function()
      local t = os.clock() + 0.01; while os.clock() < t do end   -- let each worker take some
      return { os.getenv("PDLUA_NODE_NAME"), require("pd.core.map").getpid() } end,
      { 1, 2, 3, 4, 5, 6, 7, 8 }, { chunk = 1 })
    for i = 1, r.n do
      on[r[i][1]] = true
      if not seen[r[i][2]] then seen[r[i][2]] = true; seen[#seen + 1] = r[i][2] end
    end
  until done() or core.now() > deadline
  assert(done(), "the nodes did not lend their workers")
end
]=]

return C
