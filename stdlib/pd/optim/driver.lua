--- pd.optim: the optimisation toolbox behind pd.minimize and pd.maximize.
--
-- The driver of Playdoh's optimisation (C. Rossant, B. Fontaine,
-- D. F. M. Goodman, "Playdoh: a lightweight Python library for distributed
-- computing and optimisation", J. Comput. Science 4, 2013), rebuilt around
-- ask-and-tell optimisers:
--   pd.optim.cmaes   CMA-ES as pycma 4 computes it, IPOP/BIPOP restarts
--   pd.optim.pso     SPSO-2011
--   pd.optim.ga      real-coded GA (tournament, SBX, polynomial mutation,
--                    elitism) with islands and migration
-- Every iteration the driver asks each group's optimiser for its points,
-- evaluates them all in one batch (M.evaluate: the place where the batch is
-- spread over workers) and tells the values back.  The optimisers' random
-- streams live here, in the coordinator, so a seed gives the same result
-- whatever evaluates the points.  See docs/optimisation.md.
local la = require "pd.optim.la"
local cmaes = require "pd.optim.cmaes"
local pso = require "pd.optim.pso"
local ga = require "pd.optim.ga"
local islands = require "pd.optim.islands"

local M = {}
M.la = la

local huge, floor, min, max = math.huge, math.floor, math.min, math.max
local unpack = table.unpack or unpack   -- luacheck: ignore

---------------------------------------------------------------------------
-- Errors
---------------------------------------------------------------------------

local Error = {}
Error.__index = Error
Error.__pd_error = true     -- pd.iserror (stdlib/pd/init.lua) is true for it
Error.__tostring = function(e)
  local s = "pd.optim: " .. tostring(e.message)
  if e.point then
    local parts = {}
    if e.names then
      for _, k in ipairs(e.names) do parts[#parts + 1] = k .. " = " .. string.format("%.17g", e.point[k]) end
    else
      for i = 1, #e.point do parts[#parts + 1] = string.format("%.17g", e.point[i]) end
    end
    s = s .. " (at point {" .. table.concat(parts, ", ") .. "})"
  end
  if e.traceback then s = s .. "\n" .. e.traceback end
  return s
end
M.Error = Error

--- True when v is an error object raised by pd.optim.
function M.iserror(v) return getmetatable(v) == Error end

local function raise(t) error(setmetatable(t, Error), 0) end

---------------------------------------------------------------------------
-- The search space: dim/bounds/init, or named params
---------------------------------------------------------------------------

local function pair(v, what)
  if type(v) ~= "table" or type(v[1]) ~= "number" or type(v[2]) ~= "number" then
    error("pd.optim: " .. what .. " must be {lo, hi}", 4)
  end
  if not (v[1] <= v[2]) then error("pd.optim: " .. what .. ": lo > hi", 4) end
  return v[1], v[2]
end

--- Parse the space of a spec into {n, names, lo, hi, ilo, ihi}.
-- params = {name = {imin, imax} | {bmin, imin, imax, bmax}}, as Playdoh's
-- keyword parameters: the 2-element form is an initial range with no
-- bounds, the 4-element form bounds and initial range.  Playdoh's suffixes
-- work too: name_bounds = {lo, hi} and name_initrange = {lo, hi}.
function M.space(spec)
  local S = { lo = {}, hi = {}, ilo = {}, ihi = {} }
  if spec.params then
    local byname = {}
    for key, v in pairs(spec.params) do
      local base, suffix = tostring(key):match("^(.+)_(bounds)$")
      if not base then base, suffix = tostring(key):match("^(.+)_(initrange)$") end
      if not base then base, suffix = key, "raw" end
      local e = byname[base] or { lo = -huge, hi = huge }
      byname[base] = e
      if suffix == "bounds" then
        e.lo, e.hi = pair(v, "params." .. key)
        if not e.ilo then e.ilo, e.ihi = e.lo, e.hi end
      elseif suffix == "initrange" then
        e.ilo, e.ihi = pair(v, "params." .. key); e.init_set = true
      elseif type(v) == "table" and #v == 4 then
        e.lo, e.ilo, e.ihi, e.hi = v[1], v[2], v[3], v[4]
        if not (e.lo <= e.ilo and e.ilo <= e.ihi and e.ihi <= e.hi) then
          error("pd.optim: params." .. key .. " must be {bmin, imin, imax, bmax} in order", 3)
        end
      else
        e.ilo, e.ihi = pair(v, "params." .. key)
      end
    end
    S.names = {}
    for name in pairs(byname) do S.names[#S.names + 1] = name end
    table.sort(S.names)
    for i, name in ipairs(S.names) do
      local e = byname[name]
      S.lo[i], S.hi[i], S.ilo[i], S.ihi[i] = e.lo, e.hi, e.ilo, e.ihi
    end
    S.n = #S.names
  else
    local b, init = spec.bounds, spec.init
    local n = spec.dim
    local per = function(v) return type(v) == "table" and type(v[1]) == "table" end
    if not n then
      if per(b) then n = #b elseif per(init) then n = #init end
    end
    if type(n) ~= "number" or n < 1 then
      error("pd.optim: give dim (with bounds or init) or params", 3)
    end
    S.n = n
    for i = 1, n do
      if b then
        local bi = per(b) and b[i] or b
        S.lo[i], S.hi[i] = pair(bi, "bounds")
      else
        S.lo[i], S.hi[i] = -huge, huge
      end
      if init then
        local ii = per(init) and init[i] or init
        S.ilo[i], S.ihi[i] = pair(ii, "init")
      else
        S.ilo[i], S.ihi[i] = S.lo[i], S.hi[i]
      end
      if not (S.ilo[i] > -huge and S.ihi[i] < huge) then
        error("pd.optim: dimension " .. i .. " has no finite initial range (give bounds or init)", 3)
      end
    end
  end
  if S.n < 1 then error("pd.optim: empty search space", 3) end
  return S
end

--- The value f receives for point x (a list): x itself, or a table of
-- named values.
local function decode(S, x)
  if not S.names then return x end
  local t = {}
  for i, name in ipairs(S.names) do t[name] = x[i] end
  return t
end
M.decode = decode

local function bounded(S)
  for i = 1, S.n do if S.lo[i] > -huge or S.hi[i] < huge then return true end end
  return false
end

---------------------------------------------------------------------------
-- Optimisers from a spec
---------------------------------------------------------------------------

local function cmaes_new(S, o, rng, popsize, sigma_scale, budget, target)
  local x0, widths, same = {}, {}, true
  for i = 1, S.n do
    widths[i] = S.ihi[i] - S.ilo[i]
    if widths[i] ~= widths[1] then same = false end
  end
  if o.x0 then
    for i = 1, S.n do x0[i] = o.x0[i] end
  else
    for i = 1, S.n do x0[i] = rng:range(S.ilo[i], S.ihi[i]) end
  end
  local sigma0, stds
  if o.sigma0 then
    sigma0 = o.sigma0 * sigma_scale
  elseif same then
    sigma0 = 0.25 * widths[1] * sigma_scale
  else
    sigma0, stds = 0.25 * sigma_scale, widths
  end
  local opts = {}
  for k, v in pairs(o) do opts[k] = v end
  opts.dim, opts.x0, opts.sigma0, opts.stds, opts.rng = S.n, x0, sigma0, stds, rng
  opts.popsize, opts.budget, opts.target = popsize, budget, target
  if bounded(S) then opts.lower, opts.upper = S.lo, S.hi end
  return cmaes.new(opts)
end

-- The options of group gi: spec.options, or with one table per group
-- (options = {{...}, {...}}, Playdoh's per-group optparams) the gi-th.
local function group_options(spec, gi)
  local o = spec.options or {}
  if type(o[1]) == "table" then
    o = o[gi or 1]
    if not o then error("pd.optim: options has no entry for group " .. tostring(gi), 4) end
  end
  return o
end

local function make(kind, S, spec, rng, budget, target, gi)
  local o = group_options(spec, gi)
  if kind == "cmaes" then
    local k = spec.islands or 1
    if k <= 1 then return cmaes_new(S, o, rng, spec.popsize, 1, budget, target) end
    -- an archipelago of strategies, each with its own stream drawn from
    -- rng (so its own start in init) and popsize / k samples (CMA-ES's
    -- default when popsize is not given); migrants join the receiving
    -- island's next generation as samples (cmaes.lua, ES:immigrate)
    local members = {}
    local lam = spec.popsize and max(4, floor(spec.popsize / k)) or nil
    for i = 1, k do
      members[i] = cmaes_new(S, o, la.rng(rng:int(2147483647), i), lam, 1, nil, nil)
    end
    local mig = spec.migration or {}
    return islands.new(members, { every = mig.every, count = mig.count or 1,
                                  topology = mig.topology, budget = budget, target = target })
  end
  local opts = {}
  for k, v in pairs(o) do opts[k] = v end
  opts.dim, opts.rng, opts.popsize = S.n, rng, spec.popsize
  opts.lower, opts.upper, opts.init_lower, opts.init_upper = S.lo, S.hi, S.ilo, S.ihi
  opts.budget, opts.target = budget, target
  if kind == "pso" then
    local k = spec.islands or 1
    if k <= 1 then return pso.new(opts) end
    -- an archipelago of swarms, each with its own stream drawn from rng
    local members = {}
    opts.popsize = spec.popsize and math.max(2, floor(spec.popsize / k)) or 40
    opts.budget, opts.target = nil, nil
    for i = 1, k do
      local o2 = {}
      for key, v in pairs(opts) do o2[key] = v end
      o2.rng = la.rng(rng:int(2147483647), i)
      members[i] = pso.new(o2)
    end
    local mig = spec.migration or {}
    return islands.new(members, { every = mig.every, count = mig.count or 1,
                                  topology = mig.topology, budget = budget, target = target })
  elseif kind == "ga" then
    opts.popsize = spec.popsize or 25 * (spec.islands or 1)
    opts.islands = spec.islands or 1
    opts.migration = spec.migration
    return ga.new(opts)
  end
  error("pd.optim: unknown algorithm '" .. tostring(kind) .. "' (cmaes, pso, ga)", 3)
end

local restorers = {
  cmaes = function(t)
    if t.members then return islands.restore(t, cmaes.restore) end
    return cmaes.restore(t)
  end,
  ga = ga.restore,
  pso = function(t)
    if t.members then return islands.restore(t, pso.restore) end
    return pso.restore(t)
  end,
}

---------------------------------------------------------------------------
-- Ask-and-tell objects: pd.optim.cmaes{dim=, bounds=, ...}
---------------------------------------------------------------------------

local function ask_tell(kind)
  return function(spec)
    local S = M.space(spec)
    local rng = la.rng(spec.seed or 0, 1)
    local o = make(kind, S, spec, rng, spec.budget, spec.target)
    o.maxiter = spec.maxiter or o.maxiter
    return o
  end
end
M.cmaes = ask_tell("cmaes")
M.pso = ask_tell("pso")
M.ga = ask_tell("ga")

---------------------------------------------------------------------------
-- Evaluation
---------------------------------------------------------------------------

local function handler(e)
  return { message = e, traceback = debug.traceback(tostring(e), 2) }
end

local function check_value(v, S, point, k)
  if type(v) ~= "number" then
    raise { message = "the fitness returned " .. type(v) .. " (" .. tostring(v) .. "), not a number",
            point = point, names = S.names, index = k, value = v }
  elseif v ~= v then
    raise { message = "the fitness returned NaN", point = point, names = S.names, index = k, value = v }
  end
end

-- A population block for a vectorized fitness: a pd.array of rows, or for
-- named parameters a table of columns (pd.arrays), Playdoh's keyword style.
local function block_of(S, points, a, b)
  local A = require "pd.core.array"
  if S.names then
    local cols = {}
    for i, name in ipairs(S.names) do
      local col = {}
      for k = a, b do col[#col + 1] = points[k][i] end
      cols[name] = A.array(col)
    end
    return cols
  end
  local rows = {}
  for k = a, b do rows[#rows + 1] = points[k] end
  return A.array(rows)
end
M.block_of = block_of

-- The common case of serial evaluation: f(x) for plain points, no extra
-- arguments, no groups.  One protected call for the whole batch (a
-- protected call per point cost more than the optimiser's own work); the
-- point being evaluated is remembered, so an error names it as the general
-- path does.
local function evaluate_plain(f, points, ctx)
  local out, k = {}, 0
  local bad
  local function batch()
    for i = 1, #points do
      k = i
      local v = f(points[i])
      if type(v) ~= "number" or v ~= v then bad = v; return end
      out[i] = v
    end
    k = nil
  end
  local ok, e = xpcall(batch, handler)
  if not ok then
    e.message = "the fitness raised: " .. tostring(e.message)
    e.point, e.names, e.index = points[k], nil, k
    raise(e)
  end
  if k then check_value(bad, ctx.S, points[k], k) end
  return out
end

-- Serial evaluation in the coordinator.
local function evaluate_here(f, points, ctx)
  local S, args = ctx.S, ctx.args or {}
  local nargs = args.n or #args
  if not ctx.vectorized and not ctx.groups and not S.names and nargs == 0 then
    return evaluate_plain(f, points, ctx)
  end
  local out = {}
  if ctx.vectorized then
    local block = block_of(S, points, 1, #points)
    local ok, res
    if ctx.groups then
      ok, res = xpcall(f, handler, block, ctx.groups, unpack(args, 1, nargs))
    else
      ok, res = xpcall(f, handler, block, unpack(args, 1, nargs))
    end
    if not ok then
      res.message = "the fitness raised: " .. tostring(res.message)
      raise(res)
    end
    if type(res) ~= "table" and not (type(res) == "userdata" and #res) then
      raise { message = "a vectorized fitness must return a list of " .. #points .. " values" }
    end
    if #res ~= #points then
      raise { message = "a vectorized fitness must return a list of " .. #points .. " values, not " .. #res }
    end
    for k = 1, #points do
      check_value(res[k], S, decode(S, points[k]), k)
      out[k] = res[k]
    end
    return out
  end
  for k = 1, #points do
    local x = decode(S, points[k])
    local ok, v
    if ctx.groups then
      ok, v = xpcall(f, handler, x, ctx.groups[k], unpack(args, 1, nargs))
    else
      ok, v = xpcall(f, handler, x, unpack(args, 1, nargs))
    end
    if not ok then
      v.message = "the fitness raised: " .. tostring(v.message)
      v.point, v.names, v.index = x, S.names, k
      raise(v)
    end
    check_value(v, S, x, k)
    out[k] = v
  end
  return out
end

-- The function the workers run for f: made once per run and kind (ctx[kind]
-- caches it), and pinned in pd.map, so that it is packed once per run
-- rather than once per generation (f, the space and the extra arguments do
-- not change while a run lasts; each generation's job still carries the
-- packed bytes to the workers, whose cache knows them).
local function run_task(ctx, kind, f, make)
  local cache = rawget(ctx, kind)
  if not cache then
    cache = setmetatable({}, { __mode = "k" })
    rawset(ctx, kind, cache)
  end
  local task = cache[f]
  if not task then
    task = require("pd.map")._pin(make())
    cache[f] = task
  end
  return task
end

-- Parallel evaluation with pd.map: one task per point (map batches them),
-- or with vectorized one block of rows per worker.  A worker lost on the
-- way costs only its tasks, which pd.map runs again (opts.retries).
local function evaluate_map(f, points, ctx)
  local S, args = ctx.S, ctx.args or {}
  local nargs = args.n or #args
  local names = S.names
  local pd = require "pd"
  local mopts = { errors = "collect", retries = ctx.retries or 2, cpus = ctx.cpus,
                  nodes = ctx.nodes, gpus = ctx.gpus, shared = ctx.shared, timeout = ctx.timeout }
  local out = {}
  if ctx.vectorized then
    local nb = ctx.blocks
    if type(nb) == "function" then nb = nb() end
    nb = math.max(1, math.min(nb or 1, #points))
    local items, ranges = {}, {}
    for b = 1, nb do
      local a = floor((b - 1) * #points / nb) + 1
      local e = floor(b * #points / nb)
      local g
      if ctx.groups then
        g = {}
        for k = a, e do g[#g + 1] = ctx.groups[k] end
      end
      items[b] = { block_of(S, points, a, e), g }
      ranges[b] = { a, e }
    end
    local task = run_task(ctx, "vtasks", f, function()
      return function(item)
        if item[2] then return f(item[1], item[2], unpack(args, 1, nargs)) end
        return f(item[1], unpack(args, 1, nargs))
      end
    end)
    local res = pd.map(task, items, mopts)
    for b = 1, nb do
      local r, a, e = res[b], ranges[b][1], ranges[b][2]
      if pd.iserror(r) then
        raise { message = "the fitness raised: " .. tostring(r.message), traceback = r.traceback,
                node = r.node }
      end
      if (type(r) ~= "table" and type(r) ~= "userdata") or #r ~= e - a + 1 then
        raise { message = "a vectorized fitness must return a list of " .. (e - a + 1) .. " values" }
      end
      for k = a, e do
        local v = r[k - a + 1]
        check_value(v, S, decode(S, points[k]), k)
        out[k] = v
      end
    end
    return out
  end
  -- spec.chunk: points per message; by default pd.map's scheduler sizes
  -- the batches (points one by one until it knows how long one takes, so
  -- that a slow or busy worker gets fewer)
  mopts.chunk = ctx.chunk
  local items = {}
  for k = 1, #points do items[k] = { points[k], ctx.groups and ctx.groups[k] or nil } end
  local task = run_task(ctx, "tasks", f, function()
    return function(item)
      local x = item[1]
      if names then
        local t = {}
        for i, name in ipairs(names) do t[name] = x[i] end
        x = t
      end
      if item[2] then return f(x, item[2], unpack(args, 1, nargs)) end
      return f(x, unpack(args, 1, nargs))
    end
  end)
  local res = pd.map(task, items, mopts)
  for k = 1, #points do
    local v = res[k]
    if pd.iserror(v) then
      raise { message = "the fitness raised: " .. tostring(v.message), traceback = v.traceback,
              point = decode(S, points[k]), names = names, index = k, node = v.node }
    end
    check_value(v, S, decode(S, points[k]), k)
    out[k] = v
  end
  return out
end

--- Evaluate f at every point of `points` (lists); `ctx` has the space S,
-- args (a list), groups (the group of each point, or nil), vectorized, and
-- parallel (spread over pd.map's workers) with cpus, nodes, gpus, blocks.
-- Returns the list of values.  A fitness that raises stops everything with
-- an error object (message, traceback, point); so does a value that is not
-- a number or is NaN.
function M.evaluate(f, points, ctx)
  if ctx.parallel then return evaluate_map(f, points, ctx) end
  return evaluate_here(f, points, ctx)
end

---------------------------------------------------------------------------
-- Checkpoints: plain Lua table constructors, written atomically
---------------------------------------------------------------------------

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

--- Write state to `file` atomically (a temporary file renamed over it).
function M.save(file, state)
  local out = { "return " }
  ser(state, out, {})
  local tmp = file .. ".tmp"
  local f = assert(io.open(tmp, "wb"))
  f:write(table.concat(out))
  f:close()
  assert(os.rename(tmp, file))
end

--- Read a state written by M.save; nil when the file does not exist.
function M.load(file)
  local f = io.open(file, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
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

---------------------------------------------------------------------------
-- The driver
---------------------------------------------------------------------------

-- Start a group's next CMA-ES run after a stop (IPOP or BIPOP), or return
-- false when no restart is left.
local function restart(g, S, spec, budget_left, target)
  if g.kind ~= "cmaes" or g.restarts_left <= 0 or g.algo.members then return false end
  local rng = g.algo.rng
  local lam0 = g.lambda0
  local popsize, scale, maxiter
  if g.bipop then
    g.regime_evals = g.regime_evals or { large = 0, small = 0 }
    g.regime_evals[g.regime or "large"] = g.regime_evals[g.regime or "large"] + g.algo.countevals
    if g.large_runs > 0 and g.regime_evals.small < g.regime_evals.large then
      local u = rng:uniform()
      local lamL = lam0 * 2 ^ g.large_runs
      popsize = max(lam0, floor(lam0 * (lamL / lam0) ^ (u * u)))
      scale = 0.01 ^ rng:uniform()
      maxiter = max(1, floor(0.5 * g.regime_evals.large / popsize))
      g.regime = "small"
    else
      g.large_runs = g.large_runs + 1
      g.restarts_left = g.restarts_left - 1
      popsize, scale = lam0 * 2 ^ g.large_runs, 1
      g.regime = "large"
    end
  else
    g.large_runs = g.large_runs + 1
    g.restarts_left = g.restarts_left - 1
    popsize, scale = lam0 * 2 ^ g.large_runs, 1
  end
  local o = group_options(spec, g.index)
  g.algo = cmaes_new(S, o, rng, popsize, scale, budget_left, target)
  if maxiter then g.algo.maxiter = min(g.algo.maxiter, maxiter) end
  g.runs = g.runs + 1
  return true
end

local function new_state(spec, S, kind, seed, groups)
  local state = { version = 1, kind = kind, n = S.n, seed = seed, groups = {},
                  evaluations = 0, rounds = 0, history = {} }
  local budget = spec.budget or huge
  local target = spec.target
  for gi = 1, groups do
    local rng = la.rng(seed + gi - 1, 1)   -- group g: the run of seed + g - 1
    local g = { kind = kind, index = gi, evals = 0, iter = 0, best_f = huge, history = {},
                runs = 1, large_runs = 0 }
    local r = spec.restarts
    if type(r) == "table" then
      g.restarts_left = r.max or r[1] or 9
      g.bipop = r.bipop and true or false
    else
      g.restarts_left = r or 0
      g.bipop = false
    end
    g.algo = make(kind, S, spec, rng, budget, target, gi)
    if kind == "cmaes" then g.lambda0 = g.algo.lambda end
    state.groups[gi] = g
  end
  return state
end

-- Checkpoints keep the histories out of the state file, which is rewritten
-- every iteration: they are appended to FILE.hist, one line per entry
-- ("<group or 0> iteration evaluations best mean scale"), and the state
-- records how many lines belong to it.  A run killed between the append and
-- the rename leaves extra lines, which resume drops.
local HFIELDS = { "iteration", "evaluations", "best", "mean", "scale", "migrations" }

local function hist_line(gi, h)
  local t = { tostring(gi) }
  for _, k in ipairs(HFIELDS) do t[#t + 1] = h[k] == nil and "-" or num(h[k]) end
  return table.concat(t, " ") .. "\n"
end

local function save_checkpoint(file, state)
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
  if #lines > 0 then
    local f = assert(io.open(file .. ".hist", "ab"))
    f:write(table.concat(lines))
    f:close()
  end
  -- the state without its histories
  local saved = { state.history }
  state.history = nil
  for gi, g in ipairs(state.groups) do saved[gi + 1] = g.history; g.history = nil end
  local ok, err = pcall(M.save, file, state)
  state.history = saved[1]
  for gi, g in ipairs(state.groups) do g.history = saved[gi + 1] end
  if not ok then error(err, 0) end
end

local function load_checkpoint(file)
  local state = M.load(file)
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
  local w = assert(io.open(file .. ".hist.tmp", "wb"))
  w:write(table.concat(keep))
  w:close()
  assert(os.rename(file .. ".hist.tmp", file .. ".hist"))
  return state
end

local function attach(state)
  for _, g in ipairs(state.groups) do restorers[g.kind](g.algo) end
end

local function run(f, spec, sign)
  if type(f) ~= "function" and not (getmetatable(f) and getmetatable(f).__call) then
    error("pd.minimize: the fitness must be a function", 3)
  end
  if type(spec) ~= "table" then error("pd.minimize: the second argument must be a spec table", 3) end
  local S = M.space(spec)
  local kind = spec.algorithm or "cmaes"
  if not restorers[kind] then
    error("pd.minimize: unknown algorithm '" .. tostring(kind) .. "' (cmaes, pso, ga)", 3)
  end
  local ngroups = spec.groups or 1
  local budget = spec.budget
  local maxiter = spec.maxiter
  if kind ~= "cmaes" and not budget and not maxiter then budget = 10000 * S.n end
  budget = budget or huge
  maxiter = maxiter or huge
  local target = spec.target
  if target and sign < 0 then target = -target end
  local inner = {}
  for k, v in pairs(spec) do inner[k] = v end
  inner.budget, inner.target = budget, target

  local seed = spec.seed
  if seed == nil then
    local ok, core = pcall(require, "pd.core")
    local o = ok and core.options and core.options() or {}
    seed = o.seed or (os.time() % 1000000)
  end

  local ckpt = spec.checkpoint
  local resume = spec.resume
  if resume == true then resume = ckpt end
  local state, resumed
  if resume then
    state = load_checkpoint(resume)
    if state then
      if state.kind ~= kind or state.n ~= S.n or #state.groups ~= ngroups then
        error("pd.minimize: checkpoint " .. resume .. " is for another problem", 3)
      end
      attach(state)
      resumed = true
    end
  end
  ckpt = ckpt or (type(spec.resume) == "string" and spec.resume) or nil
  if not state then
    state = new_state(inner, S, kind, seed, ngroups)
    if ckpt then os.remove(ckpt .. ".hist") end
  end

  local ctx = { S = S, args = spec.args, vectorized = spec.vectorized, cpus = spec.cpus,
                nodes = spec.nodes, gpus = spec.gpus, retries = spec.retries, shared = spec.shared,
                timeout = spec.timeout, chunk = spec.chunk }
  local popts = {}
  do
    local ok, core = pcall(require, "pd.core")
    popts = ok and core.options and core.options() or {}
  end
  -- the session pd.init set up (cpus, nodes) counts as --cpus/--nodes do
  local session = {}
  do
    local okm, pmap = pcall(require, "pd.map")
    if okm and type(pmap) == "table" and pmap._session then session = pmap._session() end
  end
  ctx.parallel = spec.parallel
  if ctx.parallel == nil then
    ctx.parallel = (spec.cpus or spec.nodes or spec.gpus or popts.cpus or popts.nodes
                    or popts.discover or session.cpus or session.cluster) and true or false
  end
  if ctx.parallel and ctx.vectorized then
    -- one block per worker: the local ones and every node's, counted at
    -- each batch (a node tells its CPUs once it has joined; the blocks do
    -- not change the values, so a seed still gives the same run)
    ctx.blocks = function()
      -- gpus: one block per GPU worker (pd.map{gpus=} starts one per device)
      local n = spec.blocks or (spec.gpus and spec.gpus > 0 and spec.gpus) or spec.cpus
      if n and n >= 1 then return n end
      n = 0
      local okp, pdm = pcall(require, "pd")
      if okp and pdm.nodes then
        for _, node in ipairs(pdm.nodes()) do
          if node.alive ~= false then n = n + (node.cpus or 0) end
        end
      end
      if n < 1 then
        local okm, cmap = pcall(require, "pd.core.map")
        n = okm and cmap.machine and cmap.machine() or 1
      end
      return n
    end
  end
  local progress = spec.progress
  local out = type(progress) == "function" and progress or function(line) io.stderr:write(line, "\n") end

  -- Why group g stops after its iteration (nil: it goes on).  When a
  -- CMA-ES run's own criteria stop it, its final mean is evaluated once
  -- (pycma's eval_final_mean: an evaluation like any other, and often
  -- better than the last samples), and it restarts while restarts are left.
  local function settle(gi, g)
    if target and g.best_f <= target then return "target" end
    if g.evals >= budget then return "budget" end
    if g.iter >= maxiter then return "maxiter" end
    if not g.algo.stop then return nil end
    if g.kind == "cmaes" and not g.algo.members
       and group_options(spec, g.index).eval_final_mean ~= false then
      local xm = g.algo:mean_x()
      local ctx1 = ctx
      if ngroups > 1 then ctx1 = setmetatable({ groups = { gi } }, { __index = ctx }) end
      local v = sign * M.evaluate(f, { xm }, ctx1)[1]
      state.evaluations, g.evals = state.evaluations + 1, g.evals + 1
      if v < g.best_f then g.best_f, g.best_x = v, xm end
    end
    if target and g.best_f <= target then return "target" end
    if not restart(g, S, inner, budget - g.evals, target) then return g.algo.stop end
  end

  -- A finished run resumed with a larger maxiter goes on: its groups that
  -- maxiter stopped are settled again under the new limit, as a run given
  -- that maxiter from the start would have been at that iteration.
  if resumed then
    local reopened = false
    for gi, g in ipairs(state.groups) do
      if g.done and g.stop == "maxiter" and g.iter < maxiter then
        g.done, g.stop = false, nil
        local why = settle(gi, g)
        if why then g.done, g.stop = true, why end
        reopened = true
      end
    end
    if reopened and ckpt then save_checkpoint(ckpt, state) end
  end

  while true do
    -- ask every live group
    local points, owner, slices = {}, ngroups > 1 and {} or nil, {}
    if ngroups == 1 then
      local g = state.groups[1]
      if not g.done then
        points = g.algo:ask()        -- the batch is the one group's points
        slices[1] = { 1, #points, points }
      end
    else
      for gi, g in ipairs(state.groups) do
        if not g.done then
          local X = g.algo:ask()
          local a = #points + 1
          for k = 1, #X do
            points[#points + 1] = X[k]
            owner[#owner + 1] = gi
          end
          slices[gi] = { a, #points, X }
        end
      end
    end
    if #points == 0 then break end
    ctx.groups = owner
    local values = M.evaluate(f, points, ctx)
    state.evaluations = state.evaluations + #values
    state.rounds = state.rounds + 1
    local round_best, round_scale, completed = huge, 0.0, false
    for gi, g in ipairs(state.groups) do
      local sl = slices[gi]
      if sl then
        local F = values
        if sl[1] ~= 1 or sl[2] ~= #values or sign ~= 1 then
          F = {}
          for k = sl[1], sl[2] do F[#F + 1] = sign * values[k] end
        end
        -- the values of the iteration so far (PSO tells a sweep in blocks)
        local sum = g.sum or 0.0
        for k = 1, #F do sum = sum + F[k] end
        g.sum = sum
        g.count = (g.count or 0) + #F
        local before = g.algo.countiter
        g.algo:tell(sl[3], F)
        g.evals = g.evals + #F
        local bx, bf = g.algo:best()
        if bf < g.best_f then g.best_f, g.best_x = bf, la.copy(bx) end
        if g.algo.countiter > before then
          g.iter = g.iter + 1
          local mean = g.sum / g.count
          state.sum, state.count = (state.sum or 0.0) + g.sum, (state.count or 0) + g.count
          g.sum, g.count = 0.0, 0
          local scale = g.algo:spread()
          g.history[#g.history + 1] = { iteration = g.iter, evaluations = g.evals,
            best = sign * g.best_f, mean = sign * mean, scale = scale,
            migrations = g.algo.migrations }   -- islands: migrations so far
          round_scale = max(round_scale, scale)
          completed = true
        end
        local why = settle(gi, g)              -- (may evaluate the final mean)
        round_best = min(round_best, g.best_f)
        if why then g.done, g.stop = true, why end
      end
    end
    if completed then   -- one entry (and progress line) per iteration
      local hist = state.history
      state.iteration = (state.iteration or 0) + 1
      if ngroups > 1 then   -- one group: the result's history is the group's
        hist[#hist + 1] = { iteration = state.iteration, evaluations = state.evaluations,
                            best = sign * round_best, mean = sign * state.sum / state.count,
                            scale = round_scale }
      end
      state.sum, state.count = 0.0, 0
      if progress then
        out(string.format("optim %s  iter %d  evals %d  best %.6g  spread %.3g",
          kind, state.iteration, state.evaluations, sign * round_best, round_scale))
      end
    end
    if ckpt then save_checkpoint(ckpt, state) end
  end

  -- the result
  local r = { evaluations = state.evaluations, seed = state.seed, history = state.history,
              algorithm = kind, groups = {} }
  local best
  for gi, g in ipairs(state.groups) do
    local gr = { x = decode(S, g.best_x), f = sign * g.best_f, evaluations = g.evals,
                 iterations = g.iter, stop = g.stop, history = g.history, runs = g.runs,
                 migrations = g.algo.migrations }
    r.groups[gi] = gr
    if not best or g.best_f < state.groups[best].best_f then best = gi end
  end
  local b = r.groups[best]
  r.x, r.f, r.stop, r.runs, r.migrations = b.x, b.f, b.stop, b.runs, b.migrations
  r.iterations = 0
  for _, g in ipairs(r.groups) do r.iterations = max(r.iterations, g.iterations) end
  if ngroups == 1 then r.history = r.groups[1].history end
  r.names = S.names
  return r
end

-- One thread for BLAS while the optimiser runs (see la.single_thread);
-- errors pass through unchanged.
local function run1(f, spec, sign)
  local restore = la.single_thread()
  local ok, r = pcall(run, f, spec, sign)
  restore()
  if not ok then error(r, 0) end
  return r
end

--- Minimise f over the space of spec; see docs/optimisation.md.
function M.minimize(f, spec) return run1(f, spec, 1) end

--- Maximise f: minimise -f, and report f's own values.
function M.maximize(f, spec) return run1(f, spec, -1) end

return M
