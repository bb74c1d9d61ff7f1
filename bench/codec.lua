--- bench/codec.lua: encode and decode throughput of pd.codec beside
-- lua-cjson and (where installed) lua-MessagePack, on the data sets of
-- its goals: 10^6 small mixed values, one table of 10^6 floats, a closure with
-- 10 upvalues; plus a raw numeric block (the test block type, ext 127,
-- standing in for pd.Array) against the memcpy floor.
--
--   build/pdlua run bench/codec.lua [--quick]
--
-- Each figure is the best of 3 timed runs.  MB/s counts the bytes of each
-- codec's own message; values/s counts the Lua values in the data set.
local pd = require "pd"
local core = require "pd.core"
-- the raw block type and the C-side timers are test-only (spec/c/
-- codec_testhooks.c, built beside this pdlua as spec/codec_testhooks.so)
local hooks = assert(package.loadlib(core.exe():match("^(.*)/") .. "/spec/codec_testhooks.so",
                                     "luaopen_codec_testhooks"))()
local codec = pd.codec

local quick = arg and arg[1] == "--quick"
local N = quick and 100000 or 1000000
local now = core.now
local unpack = table.unpack or unpack

local peers = {}
do
  local ok, cjson = pcall(require, "cjson")
  if ok then
    peers[#peers + 1] = { name = "lua-cjson", encode = cjson.encode, decode = cjson.decode }
  end
  -- Debian ships lua-MessagePack (pure Lua) for 5.1-5.3; its 5.3 file runs on 5.4.
  local mp
  ok, mp = pcall(require, "MessagePack")
  if not ok then
    local f = loadfile("/usr/share/lua/5.3/MessagePack.lua")
    if f then ok, mp = pcall(f) end
  end
  if ok and type(mp) == "table" then
    peers[#peers + 1] = { name = "lua-MessagePack", encode = mp.pack, decode = mp.unpack }
  end
end

-- Best-of-3 seconds for fn() run reps times.
local function time(fn, reps)
  local best = math.huge
  for _ = 1, 3 do
    collectgarbage()
    local t0 = now()
    for _ = 1, reps do fn() end
    local dt = (now() - t0) / reps
    if dt < best then best = dt end
  end
  return best
end

local rows = {}
local function row(set, who, bytes, values, tenc, tdec)
  rows[#rows + 1] = { set, who, bytes, values, tenc, tdec }
end

local function measure(set, data, values, reps, who_list)
  local ours = codec.encode(data)
  local te = time(function() codec.encode(data) end, reps)
  local td = time(function() codec.decode(ours) end, reps)
  row(set, "pd.codec", #ours, values, te, td)
  for _, p in ipairs(who_list or peers) do
    local ok, msg = pcall(p.encode, data)
    if ok then
      local te2 = time(function() p.encode(data) end, reps)
      local td2 = time(function() p.decode(msg) end, reps)
      row(set, p.name, #msg, values, te2, td2)
    else
      row(set, p.name .. " (cannot: " .. tostring(msg):sub(1, 40) .. ")", 0, values, nil, nil)
    end
  end
end

-- 1. small mixed values
local mixed = {}
for i = 1, N do
  local r = i % 4
  if r == 0 then mixed[i] = i
  elseif r == 1 then mixed[i] = i + 0.5
  elseif r == 2 then mixed[i] = "s" .. (i % 100)
  else mixed[i] = (i % 3 == 0) end
end
measure("10^" .. math.floor(math.log(N, 10) + 0.5) .. " mixed values", mixed, N, 1)
mixed = nil

-- 2. a table of floats
local floats = {}
for i = 1, N do floats[i] = i * 0.001 + 0.25 end
measure("table of " .. N .. " floats", floats, N, 1)
floats = nil

-- 3. a closure with 10 upvalues (cjson and MessagePack cannot carry functions)
do
  local a, b, c, d, e = 1, 2.5, "three", { 4, 5 }, true
  local g, h, i, j = math.sin, { x = 1, y = { 2 } }, 8, "nine"
  local function helper(x) return x * a end
  local function f(x)
    return helper(x) + b + #c + d[1] + (e and 1 or 0) + g(0) + h.x + i + #j
  end
  local msg = codec.encode(f)
  assert(codec.decode(msg)(1) == f(1))
  local reps = quick and 2000 or 20000
  row("closure, 10 upvalues", "pd.codec", #msg, 1,
      time(function() codec.encode(f) end, reps), time(function() codec.decode(msg) end, reps))
end

-- 4. a raw numeric block (8 bytes a value) against memcpy
do
  local blk = hooks.block(N)
  local msg = codec.encode(blk)
  local reps = quick and 20 or 50
  row("block of " .. N .. " f64 (ext)", "pd.codec", #msg, N,
      time(function() codec.encode(blk) end, reps), time(function() codec.decode(msg) end, reps))
  -- the C API (pdi_codec_encode into a reused pd_buf, as the scheduler
  -- calls it) makes no Lua string: one copy
  row("block of " .. N .. " f64 (ext)", "pd.codec C API", #msg, N,
      hooks.encode_time(blk, reps), time(function() codec.decode(msg) end, reps))
  local tm = math.huge
  for _ = 1, 3 do tm = math.min(tm, hooks.memcpy(8 * N, reps)) end
  row("block of " .. N .. " f64 (ext)", "memcpy (floor)", 8 * N, N, tm, tm)
end

-- report
local function mbs(bytes, t) return t and bytes / t / 1e6 or 0 end
print(("pdlua %s on %s, N = %d"):format(pd.version, pd.vm, N))
print(("%-28s %-18s %10s %10s %10s %12s %12s"):format(
  "data set", "codec", "bytes", "enc MB/s", "dec MB/s", "enc val/s", "dec val/s"))
local ours = {}
for _, r in ipairs(rows) do
  local set, who, bytes, values, te, td = unpack(r)
  if who == "pd.codec" and not ours[set] then ours[set] = r end
  if te then
    print(("%-28s %-18s %10d %10.1f %10.1f %12.3g %12.3g"):format(
      set, who, bytes, mbs(bytes, te), mbs(bytes, td), values / te, values / td))
  else
    print(("%-28s %-18s"):format(set, who))
  end
end
print()
print("ratios (time of the other / time of pd.codec; above 1 means pd.codec is faster):")
for _, r in ipairs(rows) do
  local set, who, _, _, te, td = unpack(r)
  local o = ours[set]
  if not who:match("^pd%.codec") and te and o then
    if who:match("^memcpy") then
      for _, q in ipairs(rows) do
        if q[1] == set and q[2]:match("^pd%.codec") then
          print(("  %-28s %-16s encode %.2fx, decode %.2fx the memcpy time"):format(
            set, q[2], q[5] / te, q[6] / td))
        end
      end
    else
      print(("  %-28s vs %-16s encode %.2fx, decode %.2fx"):format(set, who, te / o[5], td / o[6]))
    end
  end
end
