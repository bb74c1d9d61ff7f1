-- heat_arrays.lua: the 2-D heat equation u_t = u_xx + u_yy on the unit
-- square, zero on the boundary, explicit finite differences (the 5-point
-- stencil, e.g. LeVeque, "Finite Difference Methods for ODEs and PDEs",
-- 2007, ch. 9), written with pd.array views: no loop over grid points in
-- Lua.  The start u = sin(pi x) sin(pi y) decays as exp(-2 pi^2 t), which
-- the run checks.
--   pdlua run examples/heat_arrays.lua [n]
local pd = require "pd"

local n = tonumber(arg and arg[1]) or 101          -- grid points per side
local h = 1 / (n - 1)
local dt = 0.2 * h * h                             -- stable: dt <= h^2 / 4
local steps = math.floor(0.05 / dt)
local x = pd.linspace(0, 1, n)

-- u(x, y) = sin(pi x) sin(pi y): an outer product
local s = pd.math.sin(x * math.pi)
local u = pd.linalg.outer(s, s)

local inner = u:block(2, n - 1, 2, n - 1)
local t0 = os.clock()
for _ = 1, steps do
  local lap = u:block(1, n - 2, 2, n - 1) + u:block(3, n, 2, n - 1)
            + u:block(2, n - 1, 1, n - 2) + u:block(2, n - 1, 3, n) - inner * 4
  inner:add(lap, dt / (h * h))
end
local secs = os.clock() - t0

local t = steps * dt
local exact = pd.linalg.outer(s, s) * math.exp(-2 * math.pi ^ 2 * t)
local err = (u - exact):norm() / exact:norm()
print(("%dx%d grid, %d steps to t = %.4f in %.2f s; relative error %.2e"):format(n, n, steps, t, secs, err))
-- the scheme is second order: the error is about h^2 (1.1 h^2 at n = 101)
assert(err < 3 * h * h, "the discrete solution left the exact one")
