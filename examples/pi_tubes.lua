-- Monte Carlo estimate of pi (Playdoh's examples/monte_carlo.py): each node
-- draws its share of points in the unit square from its own random stream
-- (pd.rng(): the set's seed and the node's index) and counts those inside
-- the quarter circle; the partial counts are then summed up a binary tree
-- of tubes (node k sends to node k // 2 on "up"), so node 1 ends with the
-- total.  Only node 1's result travels back to the script.
--
--   pdlua run examples/pi_tubes.lua [samples] [nodes]          (default 4e6)
--   pdlua run examples/pi_tubes.lua 1e8 2                       (big)
local pd = require "pd"
local now = require("pd.core").now

local samples = math.floor(tonumber(arg and arg[1]) or 4e6)
local nodes = tonumber(arg and arg[2]) or pd.options().cpus or 2

local Pi = {}

function Pi:init(total)
  self.n = math.floor(total / self.count) + (self.index <= total % self.count and 1 or 0)
end

function Pi:run()
  local g = pd.rng()
  local inside, left = 0, self.n
  local chunk = 1000000
  local x, y = pd.zeros(chunk), pd.zeros(chunk)
  while left > 0 do
    local m = math.min(chunk, left)
    local xs, ys = x:slice(1, m), y:slice(1, m)
    g:uniform(0, 1, xs)
    g:uniform(0, 1, ys)
    -- x^2 + y^2 < 1 inside, in [1, 2) outside: floor() counts the outside
    inside = inside + m - pd.math.floor(xs * xs + ys * ys):sum()
    left = left - m
  end
  -- the reduction: children 2k and 2k+1 report to k
  for c = 2 * self.index, 2 * self.index + 1 do
    if c <= self.count then inside = inside + self:pop("up" .. c) end
  end
  if self.index > 1 then self:push("up" .. self.index, inside) end
  return inside
end

-- the tree: one tube per child, named by the child ("up2", "up3", ...)
local function tree(n)
  local t = {}
  for k = 2, n do t[#t + 1] = { "up" .. k, k, math.floor(k / 2) } end
  return t
end

local function estimate(count)
  local t0 = now()
  local r = pd.tasks(Pi, { count = count, tubes = tree(count), args = { samples }, seed = 2024 })
  return 4 * r[1] / samples, now() - t0
end

local p1, t1 = estimate(1)
local pn, tn = estimate(nodes)
print(string.format("pi: %d samples on %d nodes: %.6f (error %.2g; one node: %.6f)",
                    samples, nodes, pn, math.abs(pn - math.pi), p1))
print(string.format("  1 node %.3f s, %d nodes %.3f s: speed-up %.2fx over one node",
                    t1, nodes, tn, t1 / tn))
