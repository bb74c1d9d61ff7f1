--- bench/arrays/bench.lua: pd.array against the C floor and a Lua loop.
--
--   OPENBLAS_NUM_THREADS=1 build/pdlua bench/arrays/bench.lua [n]
--
-- n (default 10^7) elements for the element-wise cases and reductions;
-- matmul 1000x1000; eigh 100x100 and 1000x1000; normal draws.  The C floor
-- is build/bench_arrays_c (bench/arrays/cfloor.c: plain loops with the
-- project's flags, OpenBLAS and LAPACKE called directly), run from here.
-- Every figure is the best of a few repetitions; garbage is collected
-- between repetitions, outside the timed region.
-- Goals: element-wise and reductions within 1.5x of the C loop;
-- matmul and eigh within 5% of the library called directly.
local pd = require "pd"
local core = require "pd.core"
local now = core.now

local n = math.floor(tonumber(arg and arg[1]) or 1e7)
local build = os.getenv("PDLUA_BUILD") or (core.exe() or "build/pdlua"):match("^(.*)/[^/]*$") or "build"

local function best(reps, f)
  local b = math.huge
  for _ = 1, reps do
    collectgarbage()
    local t0 = now()
    f()
    local t = now() - t0
    if t < b then b = t end
  end
  collectgarbage()
  return b
end

-- the C floor, run per part; each figure keeps the best of its runs (the C
-- side and the pd side both run twice, interleaved, so that load from
-- elsewhere on the machine does not favour either)
local floor = {}
local function run_floor(which)
  local p = assert(io.popen(build .. "/bench_arrays_c " .. n .. " " .. which))
  for line in p:lines() do
    local k, v = line:match("^(%S+) (%S+)$")
    if k then
      v = tonumber(v)
      if k:match("gflops$") then floor[k] = math.max(floor[k] or 0, v)
      else floor[k] = math.min(floor[k] or math.huge, v) end
    end
  end
  p:close()
end
run_floor("elem")

local x = pd.linspace(1, 2, n)
local y = pd.linspace(2, 1.4, n)
local R = 5
local pdt = {}
local function keep(k, t) pdt[k] = math.min(pdt[k] or math.huge, t) end
local function elem_part()
  keep("add", best(R, function() local z = x + y end))
  keep("mul_scalar", best(R, function() local z = x * 2.5 end))
  keep("exp", best(R, function() local z = pd.math.exp(x) end))
  keep("add_inplace", best(R, function() y:add(x) end))
  keep("sum", best(R, function() x:sum() end))
  keep("max", best(R, function() x:max() end))
  keep("norm", best(R, function() x:norm() end))
  keep("dot", best(R, function() x:dot(y) end))
end
elem_part()
run_floor("elem")
elem_part()

-- matmul and eigh against OpenBLAS / LAPACKE called directly, on the same
-- matrices as cfloor.c builds
local function linalg_part()
  local N = 1000
  local A = pd.math.sin(pd.range(0, N * N - 1)):reshape(N, N)
  local B = pd.math.cos(pd.range(0, N * N - 1)):reshape(N, N)
  local t = best(5, function() A:matmul(B) end)
  local C = pd.zeros(N, N)
  local ti = best(5, function() C:add_matmul(A, B, 1, 0) end)
  local te = {}
  for _, m in ipairs { 100, 1000 } do
    local S = pd.zeros(m, m)
    for i = 0, m - 1 do
      for j = 0, i do
        local v = math.sin(i * m + j) + (i == j and m or 0)
        S:set(i + 1, j + 1, v); S:set(j + 1, i + 1, v)
      end
    end
    te[m] = best(m == 100 and 20 or 3, function() pd.linalg.eigh(S) end)
  end
  return t, ti, te
end
run_floor("blas")
local lt, lti, lte = linalg_part()
run_floor("blas")
do
  local t2, ti2, te2 = linalg_part()
  lt, lti = math.min(lt, t2), math.min(lti, ti2)
  for m, v in pairs(te2) do lte[m] = math.min(lte[m], v) end
end

local function print_linalg()
  local N, t, ti = 1000, lt, lti
  local function row(name, c, p, extra)
    print(("%-12s %10.2f %10.2f %7.3f%s"):format(name, c * 1e3, p * 1e3, p / c, extra or ""))
  end
  row("matmul1000", floor.matmul1000, t, ("   GFLOP/s: C %.2f, pd %.2f"):format(floor.matmul1000_gflops, 2 * N ^ 3 / t * 1e-9))
  row("  in place", floor.matmul1000, ti, ("   GFLOP/s: C %.2f, pd %.2f  (C:add_matmul(A, B, 1, 0))"):format(
      floor.matmul1000_gflops, 2 * N ^ 3 / ti * 1e-9))
  for _, m in ipairs { 100, 1000 } do row("eigh" .. m, floor["eigh" .. m], lte[m]) end
end

-- Lua tables, for scale
local luat = {}
do
  local xt, yt, zt = {}, {}, {}
  for i = 1, n do xt[i] = x[i]; yt[i] = y[i]; zt[i] = 0.0 end
  luat.add = best(2, function() for i = 1, n do zt[i] = xt[i] + yt[i] end end)
  luat.add_inplace = best(2, function() for i = 1, n do yt[i] = yt[i] + xt[i] end end)
  luat.mul_scalar = best(2, function() for i = 1, n do zt[i] = xt[i] * 2.5 end end)
  luat.exp = best(2, function() local e = math.exp; for i = 1, n do zt[i] = e(xt[i]) end end)
  luat.sum = best(2, function() local s = 0; for i = 1, n do s = s + xt[i] end end)
  luat.max = best(2, function() local m = xt[1]; for i = 2, n do local v = xt[i]; if v > m then m = v end end end)
  luat.norm = best(2, function() local s = 0; for i = 1, n do local v = xt[i]; s = s + v * v end; return math.sqrt(s) end)
  luat.dot = best(2, function() local s = 0; for i = 1, n do s = s + xt[i] * yt[i] end end)
end

-- LuaJIT: the same loops over the array's memory through the FFI
local ffit = {}
if jit then
  local ffi = require "ffi"
  local z = pd.zeros(n)
  local px, py, pz = ffi.cast("double *", x:ptr()), ffi.cast("double *", y:ptr()), ffi.cast("double *", z:ptr())
  ffit.add = best(R, function() for i = 0, n - 1 do pz[i] = px[i] + py[i] end end)
  ffit.add_inplace = best(R, function() for i = 0, n - 1 do py[i] = py[i] + px[i] end end)
  ffit.sum = best(R, function() local s = 0; for i = 0, n - 1 do s = s + px[i] end end)
end

print(("pd.array bench: n = %d, %s, OpenBLAS threads %d (OPENBLAS_NUM_THREADS=%s)"):format(n, pd.vm,
      pd.linalg.threads(), os.getenv("OPENBLAS_NUM_THREADS") or "unset"))
print(("%-12s %10s %10s %7s %12s%s"):format("op", "C floor ms", "pd ms", "pd/C", "Lua table ms", jit and "      FFI ms" or ""))
for _, k in ipairs { "add", "mul_scalar", "exp", "add_inplace", "sum", "max", "norm", "dot" } do
  print(("%-12s %10.2f %10.2f %7.2f %12.1f%s"):format(k, floor[k] * 1e3, pdt[k] * 1e3, pdt[k] / floor[k], luat[k] * 1e3,
        jit and (ffit[k] and ("%12.2f"):format(ffit[k] * 1e3) or "           -") or ""))
end

print_linalg()

-- normal draws
do
  local g = pd.random.new(7)
  local t = best(3, function() g:normal(0, 1, n) end)
  local out = pd.zeros(n)
  local ti = best(3, function() g:normal(0, 1, out) end)
  local m = math.min(n, 1000000)
  local ts = best(2, function() for _ = 1, m do g:normal() end end)
  print(("normal draws: %.1f M/s into a new array, %.1f M/s in place, %.1f M/s one call each from Lua"):format(
        n / t * 1e-6, n / ti * 1e-6, m / ts * 1e-6))
end
