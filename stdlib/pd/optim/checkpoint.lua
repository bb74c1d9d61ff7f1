--- pd.optim.checkpoint: a run's state on disk, to resume it after a kill.
--
-- The state (the driver's: its groups, each with its optimiser, and the
-- counts) is plain data, numbers, strings, booleans and tables, plus
-- pd.optim.la's matrices and generators, which are written as tables
-- marked __matrix / __rng and turned back on reading.  It is written as a
-- plain Lua table constructor, durably (checked writes to FILE.tmp, fsync,
-- a rename over FILE, fsync of the directory: the file on disk is always a
-- whole checkpoint), and read back as text only, in an empty environment.  The optimisers come back
-- as plain tables: the driver re-attaches their methods (the algorithm's
-- restore, pd.optim.registry).  A table shared by two fields cannot be
-- written (the reading would make two).
--
-- The histories stay out of FILE, which is rewritten every iteration: they
-- are appended to FILE.hist (see save below).
local la = require "pd.optim.la"
local core = require "pd.core"

local M = {}

local huge, floor = math.huge, math.floor

local mtype = math.type
local function num(v)
  if v ~= v then return "(0/0)" end
  if v == huge then return "(1/0)" end
  if v == -huge then return "(-1/0)" end
  if mtype and mtype(v) == "integer" then return string.format("%d", v) end
  local s = string.format("%.17g", v)
  if mtype and not s:find("[%.eEn]") then s = s .. ".0" end
  return s
end

local function ser(v, out, seen)
  local t = type(v)
  if t == "number" then out[#out + 1] = num(v)
  elseif t == "string" then out[#out + 1] = string.format("%q", v)
  elseif t == "boolean" then out[#out + 1] = tostring(v)
  elseif la.is_matrix(v) then ser(la.pack(v), out, seen)
  elseif la.is_generator(v) then ser(la.rng_pack(v), out, seen)
  elseif t == "table" then
    assert(not seen[v], "pd.optim: checkpoint state shares a table")
    seen[v] = true
    out[#out + 1] = "{"
    local n = #v
    for i = 1, n do ser(v[i], out, seen); out[#out + 1] = "," end
    local keys = {}
    for k in pairs(v) do
      if not (type(k) == "number" and k >= 1 and k <= n and floor(k) == k) then keys[#keys + 1] = k end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
      out[#out + 1] = "["; ser(k, out, seen); out[#out + 1] = "]="
      ser(v[k], out, seen); out[#out + 1] = ","
    end
    out[#out + 1] = "}\n"
  else
    error("pd.optim: cannot checkpoint a " .. t)
  end
end

-- Write state to `file` so that the file on disk is always a whole
-- checkpoint, the last good one until the new one is complete: checked
-- writes to file.tmp, fsync, rename over `file`, fsync of the directory
-- (pd.core.replace_file).  A failed write raises, naming the file.
local function write_state(file, state)
  local out = { "return " }
  ser(state, out, {})
  local ok, err = core.replace_file(file, table.concat(out))
  if not ok then error("pd.minimize: checkpoint: " .. err, 0) end
end

-- Read a state written by write_state; nil when the file does not exist.
-- It is read as text only, in an empty environment: a checkpoint is data,
-- and a precompiled chunk (which LuaJIT's loadstring would run) is refused.
local function read_state(file)
  local f = io.open(file, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  if text:sub(1, 1) == "\27" then
    error("pd.optim: bad checkpoint " .. file .. ": a precompiled chunk, not a text checkpoint", 2)
  end
  local chunk, err
  if setfenv then
    chunk, err = loadstring(text, "=" .. file)
    if chunk then setfenv(chunk, {}) end
  else
    chunk, err = load(text, "=" .. file, "t", {})
  end
  if not chunk then error("pd.optim: bad checkpoint " .. file .. ": " .. err, 2) end
  local function thaw(t)
    for k, v in pairs(t) do
      if type(v) == "table" then
        if v.__matrix then t[k] = la.unpack(v)
        elseif v.__rng then t[k] = la.rng_unpack(v)
        else thaw(v) end
      end
    end
    return t
  end
  return thaw(chunk())
end

-- Checkpoints keep the histories out of the state file, which is rewritten
-- every iteration: they are appended to FILE.hist, one line per entry
-- ("<group or 0> iteration evaluations best mean scale"), and the state
-- records how many lines belong to it.  A run killed between the append and
-- the rename leaves extra lines, which resume drops.  (The history line
-- format ("migrations" last) and the state's fields hist_done and
-- hist_lines are this module's.)
local HFIELDS = { "iteration", "evaluations", "best", "mean", "scale", "migrations" }

local function hist_line(gi, h)
  local t = { tostring(gi) }
  for _, k in ipairs(HFIELDS) do t[#t + 1] = h[k] == nil and "-" or num(h[k]) end
  return table.concat(t, " ") .. "\n"
end

--- Write the run's state to `file` (and its new history entries to
-- file.hist): after every iteration.
function M.save(file, state)
  local lines = {}
  local function new_entries(gi, hist, key)
    local done = state.hist_done[key] or 0
    for i = done + 1, #hist do lines[#lines + 1] = hist_line(gi, hist[i]) end
    state.hist_done[key] = #hist
  end
  state.hist_done = state.hist_done or {}
  new_entries(0, state.history, "run")
  for gi, g in ipairs(state.groups) do new_entries(gi, g.history, "g" .. gi) end
  state.hist_lines = (state.hist_lines or 0) + #lines
  if #lines > 0 then                     -- on disk before the state that counts them
    local ok, err = core.append_file(file .. ".hist", table.concat(lines))
    if not ok then error("pd.minimize: checkpoint: " .. err, 0) end
  end
  -- the state without its histories
  local saved = { state.history }
  state.history = nil
  for gi, g in ipairs(state.groups) do saved[gi + 1] = g.history; g.history = nil end
  local ok, err = pcall(write_state, file, state)
  state.history = saved[1]
  for gi, g in ipairs(state.groups) do g.history = saved[gi + 1] end
  if not ok then error(err, 0) end
end

--- The run's state saved in `file`, its histories read back from
-- file.hist (whose lines past the state's are dropped); nil when there is
-- no such file.
function M.load(file)
  local state = read_state(file)
  if not state then return nil end
  state.history = {}
  for _, g in ipairs(state.groups) do g.history = {} end
  local keep = {}
  local f = io.open(file .. ".hist", "rb")
  local n = 0
  if f then
    for line in f:lines() do
      if n >= (state.hist_lines or 0) then break end
      n = n + 1
      keep[n] = line .. "\n"
      local w = {}
      for tok in line:gmatch("%S+") do w[#w + 1] = tok end
      local h = {}
      for i, k in ipairs(HFIELDS) do
        local v = w[i + 1]
        if v ~= nil and v ~= "-" then
          h[k] = v == "(0/0)" and 0 / 0 or v == "(1/0)" and huge or v == "(-1/0)" and -huge or tonumber(v)
        end
      end
      local gi = tonumber(w[1])
      if gi == 0 then state.history[#state.history + 1] = h
      else state.groups[gi].history[#state.groups[gi].history + 1] = h end
    end
    f:close()
  end
  if n ~= (state.hist_lines or 0) then
    error("pd.minimize: " .. file .. ".hist is missing lines of the checkpoint's history", 3)
  end
  -- drop what a killed iteration appended after the last state
  local ok, err = core.replace_file(file .. ".hist", table.concat(keep))
  if not ok then error("pd.minimize: checkpoint: " .. err, 0) end
  return state
end

return M
