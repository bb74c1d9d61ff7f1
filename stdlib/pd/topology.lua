--- pd.topology: tube lists for pd.tasks (docs/tasks.md, "pd.topology").
--
-- Each helper returns a list of {name, from, to} (node indices from 1),
-- ready for `pd.tasks(task, {count = n, tubes = ...})`.  The names follow
-- one rule: a tube is named by the direction it carries data, seen from
-- its source, so the same name may appear on many edges (Playdoh's
-- "several tubes can have the same name") but never twice going out of,
-- or twice coming into, one node.
--
--   ring(n [, name])   "right" (or name): i -> i+1, n -> 1
--   line(n)            "right": i -> i+1 and "left": i+1 -> i (no wrap)
--   grid(rows, cols [, periodic])
--                      node (r, c) is (r-1)*cols + c; "right" (r,c)->(r,c+1),
--                      "left" (r,c+1)->(r,c), "down" (r,c)->(r+1,c),
--                      "up" (r+1,c)->(r,c); periodic = true wraps both ways
--                      (a torus)
--   star(n)            node 1 is the hub: tubes edge(1, i) and edge(i, 1)
--   all(n)             every ordered pair i ~= j: tube edge(i, j)
--   edge(i, j)         the name "i->j" that star and all use
local M = {}

local function count(n, who)
  if type(n) ~= "number" or n < 1 or n % 1 ~= 0 then
    error("pd.topology." .. who .. ": n must be a whole number >= 1", 3)
  end
  return math.floor(n)
end

--- pd.topology.edge(i, j) -> "i->j": the name of the tube from i to j in
-- star and all.
function M.edge(i, j) return string.format("%d->%d", i, j) end

--- ring(n [, name]): i -> i % n + 1, every edge called name ("right").
function M.ring(n, name)
  n = count(n, "ring")
  name = name or "right"
  local t = {}
  for i = 1, n do t[#t + 1] = { name, i, i % n + 1 } end
  return t
end

--- line(n): "right" i -> i+1 and "left" i+1 -> i, for i = 1 .. n-1.
function M.line(n)
  n = count(n, "line")
  local t = {}
  for i = 1, n - 1 do
    t[#t + 1] = { "right", i, i + 1 }
    t[#t + 1] = { "left", i + 1, i }
  end
  return t
end

--- grid(rows, cols [, periodic]): the four neighbours of a 2-D grid.
function M.grid(rows, cols, periodic)
  rows, cols = count(rows, "grid"), count(cols, "grid")
  local function id(r, c) return (r - 1) * cols + c end
  local t = {}
  for r = 1, rows do
    for c = 1, cols do
      local c2 = c + 1
      if c2 > cols and periodic then c2 = 1 end
      if c2 <= cols and (c2 ~= c or periodic) then
        t[#t + 1] = { "right", id(r, c), id(r, c2) }
        t[#t + 1] = { "left", id(r, c2), id(r, c) }
      end
      local r2 = r + 1
      if r2 > rows and periodic then r2 = 1 end
      if r2 <= rows and (r2 ~= r or periodic) then
        t[#t + 1] = { "down", id(r, c), id(r2, c) }
        t[#t + 1] = { "up", id(r2, c), id(r, c) }
      end
    end
  end
  return t
end

--- star(n): node 1 talks with every other node both ways.
function M.star(n)
  n = count(n, "star")
  local t = {}
  for i = 2, n do
    t[#t + 1] = { M.edge(1, i), 1, i }
    t[#t + 1] = { M.edge(i, 1), i, 1 }
  end
  return t
end

--- all(n): a tube from every node to every other one.
function M.all(n)
  n = count(n, "all")
  local t = {}
  for i = 1, n do
    for j = 1, n do
      if i ~= j then t[#t + 1] = { M.edge(i, j), i, j } end
    end
  end
  return t
end

return M
