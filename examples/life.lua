-- Conway's Game of Life (Gardner, Scientific American 223, 1970) on an
-- n x n torus, split into horizontal strips, one per node.  Before every
-- generation each strip sends its top row up and its bottom row down the
-- two rings of tubes ("up" and "down", wrapping around: a torus) and
-- receives its halo rows; the left and right edges wrap inside each strip.
-- The board after the last generation is checked against the serial run
-- here, in the script.
--
--   pdlua run examples/life.lua [n] [generations] [nodes]   (default 512 100)
--   pdlua run examples/life.lua 2000 200 2                   (big)
local pd = require "pd"
local now = require("pd.core").now

local n = tonumber(arg and arg[1]) or 512
local gens = tonumber(arg and arg[2]) or 100
local nodes = tonumber(arg and arg[3]) or pd.options().cpus or 2

-- One generation on X, (m + 2) x (n + 2) with halo rows 1 and m+2 already
-- filled: wrap the columns, count the eight neighbours, apply the rule
-- (born with 3, survives with 2 or 3) in array arithmetic:
-- alive' = 1 - min(floor(|S + C/2 - 3|), 1).
local function generation(X, m, n_)
  X:col(1):assign(X:col(n_ + 1))
  X:col(n_ + 2):assign(X:col(2))
  local function V(di, dj) return X:slice(1 + di, m + di):T():slice(1 + dj, n_ + dj):T() end
  local S = V(0, 0) + V(0, 1) + V(0, 2) + V(1, 0) + V(1, 2) + V(2, 0) + V(2, 1) + V(2, 2)
  local C = V(1, 1)
  local s = pd.math.minimum(pd.math.floor(pd.math.abs(S + C * 0.5 - 3)), 1)
  C:assign(s * -1 + 1)
end

local Life = {}

function Life:init(strip)
  local m = strip:shape()
  self.m = m
  self.X = pd.zeros(m + 2, self.n + 2)
  self.X:slice(2, m + 1):T():slice(2, self.n + 1):T():assign(strip)
end

function Life:run()
  local X, m, n_ = self.X, self.m, self.n
  for _ = 1, self.gens do
    self:push("up", X:row(2))
    self:push("down", X:row(m + 1))
    X:row(1):assign(self:pop("down"))          -- the last row of the strip above
    X:row(m + 2):assign(self:pop("up"))        -- the first row of the strip below
    self.generation(X, m, n_)
  end
  return X:slice(2, m + 1):T():slice(2, n_ + 1):T():copy()
end

local function tubes(count)
  local t = pd.topology.ring(count, "down")
  for i = 1, count do t[#t + 1] = { "up", i, (i - 2) % count + 1 } end
  return t
end

-- a random board, 30% alive
local board = pd.math.floor(pd.random.new(7):uniform(0, 1, n, n) + 0.3)

local function play(count)
  local each, first = {}, 1
  for i = 1, count do
    local m = math.floor(n / count) + (i <= n % count and 1 or 0)
    each[i] = { board:slice(first, first + m - 1):copy() }
    first = first + m
  end
  Life.n, Life.gens, Life.generation = n, gens, generation
  local t0 = now()
  local strips = pd.tasks(Life, { count = count, each = each, tubes = tubes(count) })
  return strips, now() - t0
end

-- serial, here
local t0 = now()
local X = pd.zeros(n + 2, n + 2)
X:slice(2, n + 1):T():slice(2, n + 1):T():assign(board)
for _ = 1, gens do
  X:row(1):assign(X:row(n + 1))
  X:row(n + 2):assign(X:row(2))
  generation(X, n, n)
end
local final = X:slice(2, n + 1):T():slice(2, n + 1):T():copy()
local serial = now() - t0

local _, t1 = play(1)
local strips, tn = play(nodes)
local alive, diff, row = 0, 0, 1
for _, s in ipairs(strips) do
  local m = s:shape()
  local d = final:slice(row, row + m - 1) - s
  diff = diff + (d * d):sum()
  alive = alive + s:sum()
  row = row + m
end
print(string.format("life: %dx%d torus, %d generations, %d nodes: %d cells alive (serial %d), "
                    .. "%d cells differ", n, n, gens, nodes, alive, final:sum(), diff))
print(string.format("  serial %.3f s, 1 node %.3f s, %d nodes %.3f s: speed-up %.2fx over one node",
                    serial, t1, nodes, tn, t1 / tn))
assert(diff == 0, "the parallel board differs from the serial one")
