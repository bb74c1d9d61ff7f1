-- The 2-D heat equation u_t = u_xx + u_yy on the unit square, u = 0 on the
-- edges, explicit 5-point scheme (dt = 0.2 dx^2): Playdoh's
-- examples/heat_equation.py.  The grid is split into horizontal strips, one
-- per node; before every step each strip sends its first and last rows to
-- its neighbours through the tubes of pd.topology.line ('left' goes up a
-- strip, 'right' goes down) and receives their halo rows.  The result is
-- checked against the serial solution computed here, in the script.
--
--   pdlua run examples/heat.lua [n] [steps] [nodes]      (default 256 200)
--   pdlua run examples/heat.lua 1500 200 2                (big: ~2 s a node)
local pd = require "pd"
local now = require("pd.core").now

local n = tonumber(arg and arg[1]) or 256
local steps = tonumber(arg and arg[2]) or 200
local nodes = tonumber(arg and arg[3]) or pd.options().cpus or 2

-- One explicit step on X (rows 1 and m+2 are halos, columns 1 and n the
-- fixed edges): the interior rows 2..m+1, columns 2..n-1.  Views only, and
-- in-place arithmetic into the scratch array T (m x n-2): no allocation.
local function step(X, m, k, T)
  local C = X:slice(2, m + 1):T():slice(2, n - 1):T()
  local L = X:slice(2, m + 1):T():slice(1, n - 2):T()
  local R = X:slice(2, m + 1):T():slice(3, n):T()
  local U = X:slice(1, m):T():slice(2, n - 1):T()
  local D = X:slice(3, m + 2):T():slice(2, n - 1):T()
  T:assign(U):add(D):add(L):add(R)
  T:sub(C):sub(C):sub(C):sub(C):scale(k)
  C:add(T)
end

-- The same step in two halves, so that a strip computes its inner rows
-- while its halo rows travel: stencil(X, a, b, k, T) writes into T the
-- change of rows a..b of X (2 <= a <= b <= m+1), and update(X, m, T) adds
-- it.  The arithmetic is step's, element for element.
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

local function update(X, m, T)
  X:slice(2, m + 1):T():slice(2, n - 1):T():add(T)
end

-- The initial condition: a hot square in the middle.
local function initial(row)
  local r = pd.zeros(n)
  if row > math.floor(n * 3 / 8) and row <= math.floor(n * 5 / 8) then
    r:slice(math.floor(n * 3 / 8) + 1, math.floor(n * 5 / 8)):fill(1)
  end
  return r
end

local dx = 1 / (n - 1)
local k = 0.2                                 -- dt / dx^2

local Heat = {}

-- init(self, first, last, n, steps, k): rows first..last of the grid.
function Heat:init(first, last)
  self.first, self.last = first, last
  local m = last - first + 1
  self.m = m
  local X = pd.zeros(m + 2, self.n)
  for i = 1, m do X:row(i + 1):assign(self.initial(first + i - 1)) end
  self.X = X
  self.T = pd.zeros(m, self.n - 2)
end

function Heat:run()
  local X, m, k, T = self.X, self.m, self.k, self.T
  local up, down = self.index > 1, self.index < self.count
  local stencil, update = self.stencil, self.update
  for _ = 1, self.steps do
    if up then self:push("left", X:row(2)) end
    if down then self:push("right", X:row(m + 1)) end
    if m >= 3 then stencil(X, 3, m, k, T) end                -- while the halos travel
    if up then X:row(1):assign(self:pop("right")) end        -- from the strip above
    if down then X:row(m + 2):assign(self:pop("left")) end   -- from the strip below
    stencil(X, 2, 2, k, T)
    if m >= 2 then stencil(X, m + 1, m + 1, k, T) end
    update(X, m, T)
  end
  return X:slice(2, m + 1):copy()
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
