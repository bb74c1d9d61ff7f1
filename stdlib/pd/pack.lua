--- pd.pack: a mapped function as the blob a worker runs (docs/map.md).
--
-- The mapped function travels once per worker as one codec message (lua/
-- codec.h): bytecode with its upvalues, library values by name, resolved
-- again on the worker; `shared` rides along.  The workers are our own
-- children running this VM (or a node's, which loads the script's own
-- modules in text mode only): trusted for bytecode.
--
-- The blob is two messages, "len:" prefixed the first: the module search
-- paths (the function may name modules that only those paths find; with
-- nodes, the script's own modules too), then {f = f, shared = shared}.
--   pack.pack(f, shared, remote) -> blob       (coordinator; cached, below)
--   pack.unpack(blob) -> f, shared             (worker: pd.jobload)
--   pack.pin(f) -> f                           (pack f once from now on)
--   pack.encode_in_G(v, from, tables) -> msg   (also pd.tasks' task table)
-- This module keeps no session: whether nodes may run a job is the caller's
-- to say (pd.map asks pd.session).
local cmap = require "pd.core.map"

local M = {}

-- ---------------------------------------------------------------------------
-- The globals a mapped function sees are the worker's own: an _ENV upvalue
-- that is not _G (a sandbox, a test framework's environment) is swapped for
-- _G while the function is encoded, in f and the functions it reaches
-- through upvalues, and put back afterwards; otherwise the whole
-- environment would travel by value.
local function swap_envs(v, seen, undo, tables)
  if seen[v] then return end
  seen[v] = true
  if type(v) == "table" then
    for k, x in next, v do
      if type(k) == "table" or type(k) == "function" then swap_envs(k, seen, undo, tables) end
      if type(x) == "table" or type(x) == "function" then swap_envs(x, seen, undo, tables) end
    end
    return
  end
  if debug.getinfo(v, "S").what == "C" then return end
  local i = 1
  while true do
    local n, x = debug.getupvalue(v, i)
    if not n then break end
    if n == "_ENV" and x ~= _G and type(x) == "table" then
      debug.setupvalue(v, i, _G)
      undo[#undo + 1] = { v, i, x }
    elseif type(x) == "function" or (tables and type(x) == "table" and x ~= _G) then
      swap_envs(x, seen, undo, tables)
    end
    i = i + 1
  end
end

--- pack.encode_in_G(v, from, tables) -> the codec message of v, encoded
-- while every _ENV upvalue reachable from `from` (a function, or a table
-- when `tables`) is _G; put back afterwards, also when encoding raises.
-- Through functions' upvalues only, or (tables = true, pd.tasks's task
-- table) through tables and their fields too.
function M.encode_in_G(v, from, tables)
  local undo = {}
  swap_envs(from, { [_G] = true }, undo, tables)
  local ok, s = pcall(cmap.encode, v)
  for k = #undo, 1, -1 do debug.setupvalue(undo[k][1], undo[k][2], undo[k][3]) end
  if not ok then error(s, 0) end
  return s
end

-- ---------------------------------------------------------------------------
-- The blob cache.  A function whose upvalues are all plain values (nil,
-- booleans, numbers, strings), the globals table or C functions packs the
-- same way every time until one of them changes: its blob is cached (one
-- string.dump per function, not per map).  Tables are never assumed
-- unchanged.
local blob_cache = setmetatable({}, { __mode = "k" })

local function upvalues_key(f)
  local vals, i = {}, 1
  while true do
    local n, v = debug.getupvalue(f, i)
    if not n then break end
    local t = type(v)
    if t == "table" then
      if v ~= _G then return nil end
    elseif t == "function" then
      if not pcall(debug.getinfo, v, "S") or debug.getinfo(v, "S").what ~= "C" then return nil end
    elseif t ~= "nil" and t ~= "boolean" and t ~= "number" and t ~= "string" then
      return nil
    end
    vals[i] = v
    i = i + 1
  end
  vals.n = i - 1
  return vals
end

local function same(a, b)
  if a.n ~= b.n then return false end
  for i = 1, a.n do
    local x, y = a[i], b[i]
    if x ~= y or (math.type and math.type(x) ~= math.type(y)) then return false end
  end
  return true
end

-- Pinned functions (pack.pin) pack once for as long as they live, whatever
-- their upvalues and `shared` hold: their owner promises that none of it
-- changes meanwhile.  pd.optim pins a run's evaluation task, which closes
-- over the fitness and its extra arguments (a table), so that a run of
-- many generations packs it once, not once per generation.
local pinned = setmetatable({}, { __mode = "k" })
local PINNED = { n = -1 }          -- the cache key of a pinned function

--- pack.pin(f) -> f, packed once from now on (see above).
function M.pin(f)
  pinned[f] = true
  return f
end

-- cluster: the script's own Lua modules (files under its directory) travel
-- with the job as source, so that workers on other machines can require
-- them; a worker started by a node loads them in text mode only.
local function local_modules()
  if not arg or not arg[0] then return nil end
  local ok, codec = pcall(require, "pd.codec")
  if not ok then return nil end
  local ok2, b = pcall(codec.bundle)
  if not ok2 or not b then return nil end
  local mods, any = {}, false
  for name, m in pairs(b.modules) do
    mods[name] = { src = b.sources[m.sha], path = m.path }
    any = true
  end
  return any and mods or nil
end

--- pack.pack(f, shared, remote) -> the blob a worker turns back into
-- (f, shared).  remote (true or false: the cache compares it): nodes may
-- run the job, so the script's modules travel with it (reading and hashing
-- them costs a local-only job's cold start, hence only then).
function M.pack(f, shared, remote)
  local key
  if pinned[f] then key = PINNED
  else key = shared == nil and upvalues_key(f) end
  local hit = key and blob_cache[f]
  -- (same() tells PINNED from any upvalue list by its n; shared is nil
  -- unless pinned)
  if hit and same(hit.key, key) and rawequal(hit.shared, shared)
     and hit.path == package.path and hit.cpath == package.cpath and hit.remote == remote then
    return hit.blob
  end
  local paths = cmap.encode { path = package.path, cpath = package.cpath,
                              mods = remote and local_modules() or nil }
  local blob = #paths .. ":" .. paths .. M.encode_in_G({ f = f, shared = shared }, f, false)
  if key then
    blob_cache[f] = { key = key, blob = blob, path = package.path, cpath = package.cpath,
                      remote = remote, shared = shared }
  end
  return blob
end

--- pack.unpack(blob) -> f, shared: the worker side.  The code is pd.jobload,
-- which a worker loads alone (not this file) before its first task; the C
-- worker loop caches the result per blob.
function M.unpack(blob) return require("pd.jobload")(blob) end

return M
