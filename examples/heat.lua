-- The 2-D heat equation u_t = u_xx + u_yy on the unit square, u = 0 on the
-- edges, explicit 5-point scheme (dt = 0.2 dx^2): Playdoh's
-- examples/heat_equation.py.  The grid is split into horizontal strips, one
-- per node; every few steps each strip sends its first and last rows to its
-- neighbours through the tubes of pd.topology.line ('left' goes up a strip,
-- 'right' goes down) and receives their halo rows.  The result is checked
-- against the serial solution computed here, in the script.
--
--   pdlua run examples/heat.lua [n] [steps] [nodes]      (default 256 200)
--   pdlua run examples/heat.lua 1500 200 2                (big: ~2 s a node)
local pd = require "pd"
local now = require("pd.core").now

local n = tonumber(arg and arg[1]) or 256
local steps = tonumber(arg and arg[2]) or 200
local nodes = tonumber(arg and arg[3]) or pd.options().cpus or 2

-- One explicit step on rows a..b of X (2 <= a <= b <= #rows - 1; columns
-- 1 and n are the fixed edges): stencil writes the rows' change into rows
-- a-1..b-1 of the scratch array T, update adds it.  Views only, and
-- in-place arithmetic: no allocation.  The serial solution and the strips
-- run exactly this arithmetic, so the strips' rows come out bit for bit as
-- the serial solution's.
local function stencil(X, a, b, k, T)
  local C = X:slice(a, b):T():slice(2, n - 1):T()
  local L = X:slice(a, b):T():slice(1, n - 2):T()
  local R = X:slice(a, b):T():slice(3, n):T()
  local U = X:slice(a - 1, b - 1):T():slice(2, n - 1):T()
  local D = X:slice(a + 1, b + 1):T():slice(2, n - 1):T()
  local Tt = T:slice(a - 1, b - 1)
  Tt:assign(U):add(D):add(L):add(R)
  Tt:sub(C):sub(C):sub(C):sub(C):scale(k)
end

local function update(X, a, b, T)
  X:slice(a, b):T():slice(2, n - 1):T():add(T:slice(a - 1, b - 1))
end

-- The whole grid's step (rows 1 and m+2 fixed or halos; T is m x n-2).
local function step(X, m, k, T)
  stencil(X, 2, m + 1, k, T)
  update(X, 2, m + 1, T)
end

-- The initial condition: a hot square in the middle.
local function initial(row)
  local r = pd.zeros(n)
  if row > math.floor(n * 3 / 8) and row <= math.floor(n * 5 / 8) then
    r:slice(math.floor(n * 3 / 8) + 1, math.floor(n * 5 / 8)):fill(1)
  end
  return r
end

local k = 0.2                                 -- dt / dx^2

local Heat = {}

-- Each strip keeps `halo` ghost rows above and below its own: it swaps
-- halo rows with each neighbour once every `halo` steps, then advances that
-- many steps alone, recomputing the ghost rows it can (one fewer on each
-- side at every step).  Fewer, larger exchanges: two strips wait for each
-- other a quarter as often, which matters when a step takes half a
-- millisecond and a core now and then stalls.
--
-- init(self, first, last): rows first..last of the grid.  X's rows: 1..h
-- ghosts above, h+1..h+m its own, h+m+1..m+2h ghosts below.
function Heat:init(first, last)
  local h = self.halo
  self.first, self.last = first, last
  local m = last - first + 1
  self.m = m
  local X = pd.zeros(m + 2 * h, self.n)
  for i = 1, m do X:row(h + i):assign(self.initial(first + i - 1)) end
  self.X = X
  self.T = pd.zeros(m + 2 * h - 2, self.n - 2)
  -- rows 1 and n of the grid never move: the first strip computes nothing
  -- above its own rows, the last nothing below
  self.lo_min = self.index == 1 and h + 1 or 2
  self.hi_max = self.index == self.count and h + m or m + 2 * h - 1
end

function Heat:run()
  local X, m, k, T, h = self.X, self.m, self.k, self.T, self.halo
  local up, down = self.index > 1, self.index < self.count
  local stencil, update = self.stencil, self.update
  local done = 0
  while done < self.steps do
    if up then self:push("left", X:slice(h + 1, 2 * h)) end        -- my first rows, up
    if down then self:push("right", X:slice(m + 1, m + h)) end     -- my last rows, down
    if up then X:slice(1, h):assign(self:pop("right")) end         -- ghosts from the strip above
    if down then X:slice(m + h + 1, m + 2 * h):assign(self:pop("left")) end   -- and below
    for s = 1, math.min(h, self.steps - done) do
      local lo, hi = math.max(1 + s, self.lo_min), math.min(m + 2 * h - s, self.hi_max)
      stencil(X, lo, hi, k, T)
      update(X, lo, hi, T)
    end
    done = done + h
  end
  return X:slice(h + 1, h + m):copy()
end

-- Rows 2..n-1 move; rows 1 and n stay 0.  Split them as evenly as can be.
local function solve(count)
  local inner = n - 2
  local each = {}
  local first = 2
  for i = 1, count do
    local m = math.floor(inner / count) + (i <= inner % count and 1 or 0)
    each[i] = { first, first + m - 1 }
    first = first + m
  end
  Heat.n, Heat.steps, Heat.k, Heat.initial = n, steps, k, initial
  Heat.stencil, Heat.update = stencil, update
  local fewest = math.huge
  for i = 1, count do fewest = math.min(fewest, each[i][2] - each[i][1] + 1) end
  Heat.halo = math.max(1, math.min(4, fewest))       -- ghost rows: up to 4, no more than a strip has
  local t0 = now()
  local strips = pd.tasks(Heat, { count = count, each = each, tubes = pd.topology.line(count) })
  return strips, each, now() - t0
end

-- The serial solution, here.
local t0 = now()
local S = pd.zeros(n, n)
for i = 1, n do S:row(i):assign(initial(i)) end
local scratch = pd.zeros(n - 2, n - 2)
for _ = 1, steps do step(S:slice(1, n), n - 2, k, scratch) end
local serial = now() - t0

local one, _, t1 = solve(1)
local strips, each, tn = solve(nodes)
local err = 0
for i, s in ipairs(strips) do
  local d = S:slice(each[i][1], each[i][2]) - s
  err = math.max(err, d:max(), -d:min())
end
local d1 = S:slice(2, n - 1) - one[1]
err = math.max(err, d1:max(), -d1:min())
if err == 0 then err = 0 end                  -- not -0 (LuaJIT's math.max keeps it)

print(string.format("heat: %dx%d grid, %d steps, %d nodes", n, n, steps, nodes))
print(string.format("  total heat %.6f (serial %.6f), largest difference from serial %.3g",
                    (function() local s = 0; for _, x in ipairs(strips) do s = s + x:sum() end; return s end)(),
                    S:sum(), err))
print(string.format("  serial %.3f s, 1 node %.3f s, %d nodes %.3f s: speed-up %.2fx over one node",
                    serial, t1, nodes, tn, t1 / tn))
assert(err < 1e-12, "the parallel solution differs from the serial one")
