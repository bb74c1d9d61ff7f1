--- bench/optim/run.lua: pdlua's optimisers on the protocol of the anchor
-- table (docs/optimisation.md, "How good: the bench"; bench/optim/anchors.csv
-- holds the measured pycma, DEAP, pyswarms, SPSO-2011 and Playdoh figures).
--
--   build/pdlua run bench/optim/run.lua [--quick | --full | --rates] [--seeds N]
--       [--first-seed S] [--algos cmaes,ipop,pso,ga,ga4] [--funcs sphere,...]
--       [--dims 10,20] [--option name=value ...]
--
-- --rates compares CMA-ES's success rates with pycma's over many seeds
-- (bench/optim/rates.csv: pycma 4.4.0 run here with ref.py, 200 to 1000
-- seeds a cell), where the 15-seed anchors cannot tell rates apart: each
-- row runs ours on as many seeds (or --seeds N) and prints both rates, the
-- difference and its standard error.
--
-- Seeds are S .. S + N - 1 (S = 1); --option sets an algorithm option
-- (spec.options), e.g. --option updatecovwait=0.
--
-- Protocol: x0 ~ U(box) from the seed, sigma0 = 0.25 range (CMA-ES), bounds
-- enforced, budget 1e5 evaluations, success when f - f* < 1e-8; the number
-- of evaluations of a run is the index of its first evaluation below that.
-- Cost per evaluation is the optimiser's own: (CPU time - time in f) / evals,
-- less what timing f costs outside f (the clock() calls around each
-- evaluation, measured at the start and printed: about 0.8 us here, as much
-- as a tenth of the goal).
-- For each cell it prints successes, the median evaluations of successful
-- runs, ERT, the median best f - f*, the cost, and the anchor's figures with
-- the ratio median(ours) / median(anchor).
package.path = (os.getenv("PDLUA_SOURCE") or ".") .. "/bench/optim/?.lua;" .. package.path
local pd = require "pd"
local F = require "functions"

local here = (os.getenv("PDLUA_SOURCE") or ".") .. "/bench/optim/"

-- ---- options ---------------------------------------------------------------
local opt = { mode = "quick" }
local i = 1
while arg[i] do
  local a = arg[i]
  if a == "--quick" then opt.mode = "quick"
  elseif a == "--full" then opt.mode = "full"
  elseif a == "--rates" then opt.mode = "rates"
  elseif a == "--seeds" then opt.seeds = tonumber(arg[i + 1]); i = i + 1
  elseif a == "--first-seed" then opt.first = tonumber(arg[i + 1]); i = i + 1
  elseif a == "--option" then
    local k, v = arg[i + 1]:match("^([%w_]+)=(.*)$")
    if not k then error("--option wants name=value") end
    opt.options = opt.options or {}
    opt.options[k] = tonumber(v) or (v == "true" and true) or (v ~= "false" and v) or false
    i = i + 1
  elseif a == "--algos" then opt.algos = arg[i + 1]; i = i + 1
  elseif a == "--funcs" then opt.funcs = arg[i + 1]; i = i + 1
  elseif a == "--dims" then opt.dims = arg[i + 1]; i = i + 1
  else error("unknown option " .. a) end
  i = i + 1
end
local function split(s)
  local t = {}
  for w in s:gmatch("[^,]+") do t[#t + 1] = tonumber(w) or w end
  return t
end

-- ---- the cells: what each algorithm is measured on, and against what --------
-- {algo, func, dims, anchors}
local FULL = {
  { "cmaes", "sphere", { 10, 20, 40 } }, { "cmaes", "ellipsoid", { 10, 20, 40 } },
  { "cmaes", "rosenbrock", { 10, 20, 40 } }, { "cmaes", "ackley", { 10, 20, 40 } },
  { "cmaes", "griewank", { 20 } }, { "cmaes", "sphere", { 2 } },
  { "ipop", "rastrigin", { 2, 10 } }, { "ipop", "griewank", { 10 } },
  { "ipop", "schwefel", { 2 } },
  { "pso", "sphere", { 10, 20 } }, { "pso", "ackley", { 10 } }, { "pso", "rastrigin", { 10 } },
  { "ga", "sphere", { 10 } }, { "ga", "rastrigin", { 10 } }, { "ga", "rosenbrock", { 10 } },
  { "pso", "ackley", { 20 } }, { "pso", "griewank", { 20 } },
  { "ga4", "schwefel", { 10 } }, { "ga4", "schwefelm", { 10 } },
}
local QUICK = {
  { "cmaes", "sphere", { 10 } }, { "cmaes", "ellipsoid", { 10 } },
  { "cmaes", "rosenbrock", { 10 } }, { "cmaes", "ackley", { 10 } },
  { "ipop", "rastrigin", { 2 } },
  { "pso", "sphere", { 10 } }, { "ga", "sphere", { 10 } }, { "ga", "rastrigin", { 10 } },
}
local ANCHOR = {
  cmaes = { "pycma", "playdoh-CMAES" }, ipop = { "pycma-IPOP", "playdoh-CMAES" },
  pso = { "SPSO2011", "playdoh-PSO" }, ga = { "deap-GA", "playdoh-GA" },
  ga4 = { "deap-GA", "playdoh-GA" },
}
local SPEC = {
  cmaes = { algorithm = "cmaes" },
  ipop = { algorithm = "cmaes", restarts = 9 },
  pso = { algorithm = "pso" },
  ga = { algorithm = "ga" },
  ga4 = { algorithm = "ga", islands = 4, popsize = 100 },
}

local seeds = opt.seeds or (opt.mode == "full" and 15 or 3)
local cells = opt.mode == "full" and FULL or QUICK
if opt.algos or opt.funcs or opt.dims then
  cells = {}
  local algos = split(opt.algos or "cmaes")
  local funcs = split(opt.funcs or "sphere")
  local dims = split(opt.dims or "10")
  for _, a in ipairs(algos) do for _, f in ipairs(funcs) do cells[#cells + 1] = { a, f, dims } end end
end

-- ---- anchors ---------------------------------------------------------------
-- The rows of a CSV file of ours (a header line, then values; lines
-- starting with # are comments) as tables keyed by the header's names.
local function read_csv(name)
  local rows, header = {}, nil
  local f = assert(io.open(here .. name))
  for line in f:lines() do
    if not line:match("^#") then
      local row = split(line)
      if not header then header = row else
        local t = {}
        for k, key in ipairs(header) do t[key] = row[k] end
        rows[#rows + 1] = t
      end
    end
  end
  f:close()
  return rows
end

local anchors = {}
for _, t in ipairs(read_csv("anchors.csv")) do anchors[t.algo .. "/" .. t.func .. "/" .. t.dim] = t end

-- ---- one run -----------------------------------------------------------------
local clock = os.clock

-- What fit() below spends per evaluation outside the timed interval: its
-- bookkeeping and the part of the two clock() calls that falls outside.
-- The smallest of five measurements (the machine may be shared).
local function timing_cost()
  local best = math.huge
  for _ = 1, 5 do
    local n, tin, evals, hit = 20000, 0.0, 0, nil
    local t0 = clock()
    for _ = 1, n do
      local a = clock()
      tin = tin + (clock() - a)
      evals = evals + 1
      if not hit and evals < 0 then hit = evals end
    end
    best = math.min(best, ((clock() - t0) - tin) / n)
  end
  return best
end
local TIMING = timing_cost()
local function one(algo, fname, n, seed)
  local fn = F[fname]
  local fopt = F.fopt(fname, n)
  local evals, hit, best, tin = 0, nil, math.huge, 0.0
  local f = fn.f
  local function fit(x)
    local t0 = clock()
    local v = f(x)
    tin = tin + (clock() - t0)
    evals = evals + 1
    local d = v - fopt
    if d < best then best = d end
    if not hit and d < 1e-8 then hit = evals end
    return v
  end
  local spec = { dim = n, bounds = fn.box, seed = seed, budget = 1e5, target = fopt + 1e-8 * 0.999 }
  for k, v in pairs(SPEC[algo]) do spec[k] = v end
  spec.options = opt.options
  local t0 = clock()
  local r = pd.minimize(fit, spec)
  local total = clock() - t0
  return { hit = hit, evals = r.evaluations, best = best,
           cost = ((total - tin) / r.evaluations - TIMING) * 1e6 }
end

local function median(t)
  if #t == 0 then return nil end
  table.sort(t)
  local m = #t
  if m % 2 == 1 then return t[(m + 1) / 2] end
  return (t[m / 2] + t[m / 2 + 1]) / 2
end

local function fmt(v, p)
  if v == nil then return "-" end
  if type(v) == "string" then return v end
  if p == "g" then return string.format("%.3g", v) end
  return string.format("%d", math.floor(v + 0.5))
end

-- ---- --rates: success rates over many seeds against pycma's ---------------
if opt.mode == "rates" then
  local rows = read_csv("rates.csv")
  print(string.format("pdlua %s, CMA-ES success rates against pycma's (rates.csv), budget 1e5, target 1e-8", pd.vm))
  print(string.format("%-10s %3s | %-17s | %-17s | %7s %6s  %s", "func", "n", "pdlua", "pycma 4.4.0",
                      "diff", "s.e.", "verdict"))
  local funcs, dims = {}, {}
  for _, w in ipairs(split(opt.funcs or "")) do funcs[w] = true end
  for _, w in ipairs(split(opt.dims or "")) do dims[w] = true end
  local t0 = clock()
  for _, row in ipairs(rows) do
    local fname, n, N = row.func, row.dim, opt.seeds or row.seeds
    if (not opt.funcs or funcs[fname]) and (not opt.dims or dims[n]) then
      local succ = 0
      for seed = opt.first or 1, (opt.first or 1) + N - 1 do
        if one("cmaes", fname, n, seed).hit then succ = succ + 1 end
      end
      local p1, p2 = succ / N, row.succ / row.seeds
      local se = math.sqrt(p1 * (1 - p1) / N + p2 * (1 - p2) / row.seeds)
      local d = p1 - p2
      local verdict = d >= 0 and "at least pycma's"
        or (-d <= 2 * se and "below, within 2 s.e." or "below")
      print(string.format("%-10s %3d | %4d/%-4d %6.1f%% | %4d/%-4d %6.1f%% | %+6.1f%% %5.1f%%  %s",
        fname, n, succ, N, 100 * p1, row.succ, row.seeds, 100 * p2, 100 * d, 100 * se, verdict))
      io.stdout:flush()
    end
  end
  print(string.format("total CPU %.1f s", clock() - t0))
  return
end

print(string.format("pdlua %s, %s mode, %d seeds, budget 1e5, target 1e-8; timing f costs %.2f us/eval (subtracted)",
  pd.vm, opt.mode, seeds, TIMING * 1e6))
print(string.format("%-6s %-10s %3s | %5s %7s %7s %9s %7s | %-14s %5s %7s %6s | %-14s %5s %7s %9s",
  "algo", "func", "n", "succ", "median", "ERT", "med.best", "us/ev",
  "anchor", "succ", "median", "ratio", "playdoh", "succ", "median", "med.best"))
local t_start = clock()
for _, cell in ipairs(cells) do
  local algo, fname = cell[1], cell[2]
  for _, n in ipairs(cell[3]) do
    local hits, bests, costs, used, succ = {}, {}, {}, 0, 0
    for seed = opt.first or 1, (opt.first or 1) + seeds - 1 do
      local r = one(algo, fname, n, seed)
      if r.hit then succ = succ + 1; hits[#hits + 1] = r.hit; used = used + r.hit
      else used = used + r.evals end
      bests[#bests + 1] = r.best
      costs[#costs + 1] = r.cost
    end
    local med = median(hits)
    local ert = succ > 0 and used / succ or nil
    local a = anchors[ANCHOR[algo][1] .. "/" .. fname .. "/" .. n] or {}
    local p = anchors[ANCHOR[algo][2] .. "/" .. fname .. "/" .. n] or {}
    local am = tonumber(a.median_evals_succ)
    local ratio = (med and am and am < math.huge) and string.format("%.3f", med / am) or "-"
    print(string.format("%-6s %-10s %3d | %2d/%-2d %7s %7s %9s %7.1f | %-14s %2s/%-2s %7s %6s | %-14s %2s/%-2s %7s %9s",
      algo, fname, n, succ, seeds, fmt(med), fmt(ert), fmt(median(bests), "g"), median(costs),
      ANCHOR[algo][1], a.succ or "-", a.runs or "-", a.median_evals_succ or "-", ratio,
      ANCHOR[algo][2], p.succ or "-", p.runs or "-", p.median_evals_succ or "-", p.median_best or "-"))
    io.stdout:flush()
  end
end
print(string.format("total CPU %.1f s", clock() - t_start))
