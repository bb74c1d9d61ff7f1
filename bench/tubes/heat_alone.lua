-- bench/tubes/heat_alone.lua N ROWS STEPS: the heat equation's step (the
-- arithmetic of examples/heat.lua) on ROWS rows of an N-wide grid, in this
-- process alone, no tubes; prints the seconds the steps took.  run.lua
-- starts one on the whole grid, then two at once on half of it each: the
-- speed-up that two cores of this machine give this work with nothing to
-- exchange, the ceiling for the tube version's.
local pd = require "pd"
local now = require("pd.core").now
local n, rows, steps = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3])
assert(n and rows and steps, "usage: heat_alone.lua N ROWS STEPS")
local k = 0.2
local X = pd.zeros(rows + 2, n)
X:slice(2, rows + 1):fill(0.5)
local T = pd.zeros(rows, n - 2)
local C = X:slice(2, rows + 1):T():slice(2, n - 1):T()
local L = X:slice(2, rows + 1):T():slice(1, n - 2):T()
local R = X:slice(2, rows + 1):T():slice(3, n):T()
local U = X:slice(1, rows):T():slice(2, n - 1):T()
local D = X:slice(3, rows + 2):T():slice(2, n - 1):T()
local t0 = now()
for _ = 1, steps do
  T:assign(U):add(D):add(L):add(R)
  T:sub(C):sub(C):sub(C):sub(C):scale(k)
  C:add(T)
end
io.write(string.format("%.6f\n", now() - t0))
