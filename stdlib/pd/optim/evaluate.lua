--- pd.optim.evaluate: the values of a batch of points, here or on workers.
--
-- The driver hands over every point of an iteration at once (all groups
-- together) and gets back their values in the same order; this is the one
-- place where the batch is spread.  The ways, chosen by the context that
-- M.context makes from the spec:
--   serial       f(x) in the coordinator, one protected call per batch in
--                the plain case (evaluate_plain), per point otherwise;
--   vectorised   f(block) for the whole batch, a pd.array of rows or (named
--                parameters) a table of columns;
--   parallel     pd.map over the workers, one task per point (map batches
--                them) or, vectorised, one block of rows per worker (GPU
--                workers: one block per device);
-- and whichever it is, a fitness that raises, or returns something that is
-- not a number or is NaN, stops the run with an error object (pd.error,
-- origin "optim": message, traceback, the point and its index).  The
-- values do not depend on the way, so a seed gives the same run.
local perror = require "pd.error"
local space = require "pd.optim.space"

local M = {}

local floor = math.floor
local unpack = table.unpack or unpack   -- luacheck: ignore
local decode = space.decode

-- Raise t as pd.optim's error object (pd.error, origin "optim").
local function raise(t)
  t.origin = "optim"
  perror.raise(t)
end

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
    task = require("pd.pack").pin(make())
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

--- The evaluation context of a run: the space S and what the spec says
-- about evaluation (args, vectorized, cpus, nodes, gpus, retries, shared,
-- timeout, chunk), and whether to spread over workers: spec.parallel, or
-- else yes when the spec, the command line (popts, pd.core.options()) or
-- the session pd.init set up asks for workers.  The driver sets groups
-- (the group of each point) before each batch.
function M.context(spec, S, popts)
  local ctx = { S = S, args = spec.args, vectorized = spec.vectorized, cpus = spec.cpus,
                nodes = spec.nodes, gpus = spec.gpus, retries = spec.retries, shared = spec.shared,
                timeout = spec.timeout, chunk = spec.chunk }
  -- the session pd.init set up (cpus, nodes) counts as --cpus/--nodes do
  local session = require("pd.session").state()
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
  return ctx
end

return M
