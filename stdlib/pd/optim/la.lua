--- pd.optim.la: the few numerical kernels the optimisers need, in one place.
--
-- Every optimiser in pd.optim goes through this file for its random numbers
-- and its linear algebra: the matrices are native pd.arrays (BLAS gemm for
-- the covariance update; the eigendecomposition is optim.c's own, with
-- LAPACK's dsyevd as its fallback).
--
-- Conventions.  A vector is a Lua list of n numbers; a matrix is an n x n
-- f64 pd.array.  Random numbers come from pd.random, so a seed gives the
-- same stream under Lua 5.4 and LuaJIT 2.1 and a checkpoint restores it
-- exactly.
local M = {}

local floor, abs = math.floor, math.abs

---------------------------------------------------------------------------
-- Random numbers: pd.random (Philox4x64-10, ziggurat normals), one stream
-- per (seed, stream) pair, the same on every machine and under both VMs.
-- A generator is wrapped in a plain table {g = generator}; checkpoints
-- store g:state() and rebuild it exactly (M.rng_pack / M.rng_unpack).
---------------------------------------------------------------------------
local A = require "pd.core.array"
local R = require "pd.core.random"

local Rng = {}
Rng.__index = Rng
M.Rng = Rng

--- A new generator for seed `seed`, stream `stream` (default 0): integers
-- (a float seed is truncated; a negative one is taken as its absolute value).
--- tell()'s check of its values F: n of them, each a number and not NaN.
-- who names the optimiser in the message; an error is raised at the caller
-- of tell().
function M.check_values(who, F, n)
  assert(#F == n, who .. ": tell() needs " .. n .. " values, got " .. #F)
  for k = 1, n do
    local v = F[k]
    if type(v) ~= "number" or v ~= v then
      error(string.format("%s: value %d is %s, not a number", who, k, tostring(v)), 3)
    end
  end
end

--- A new list with the elements of list x (a point's coordinates).
function M.copy(x)
  local y = {}
  for i = 1, #x do y[i] = x[i] end
  return y
end

function M.rng(seed, stream)
  seed = floor(abs(tonumber(seed) or 0))
  stream = floor(abs(tonumber(stream) or 0))
  return setmetatable({ g = R.new(seed, stream) }, Rng)
end

--- Re-attach the methods to a generator table read back from a checkpoint.
function M.rng_restore(t) return setmetatable(t, Rng) end

--- Checkpoint forms of a pd.random generator.
function M.is_generator(v)
  if type(v) ~= "userdata" or A.isarray(v) then return false end
  local ok, st = pcall(function() return v.state end)
  return ok and type(st) == "function"
end
function M.rng_pack(g) return { __rng = g:state() } end
function M.rng_unpack(t) return R.from_state(t.__rng) end

--- Uniform double in [0, 1).
function Rng:uniform() return self.g:uniform() end

--- Uniform in [a, b).
function Rng:range(a, b) return a + (b - a) * self.g:uniform() end

--- Integer uniform in 1..n.
function Rng:int(n) return self.g:integers(1, n) end

--- Standard normal.
function Rng:normal() return self.g:normal() end

--- An m x n array of standard normals (one call into C).
function Rng:normals(m, n) return self.g:normal(0, 1, m, n) end

---------------------------------------------------------------------------
-- Matrices: native pd.array (C, BLAS and LAPACKE)
--
-- The optimisers' matrices (CMA-ES's covariance C, its eigenvectors and
-- the derived transforms) are n x n f64 pd.arrays, worked on by the native
-- kernels of lua/optim.c (BLAS gemm and ger for the covariance update,
-- LAPACK dsyevd for the eigendecomposition).  Vectors stay Lua lists.
---------------------------------------------------------------------------
local linalg = A.linalg

--- The native kernels of the optimisers (lua/optim.c): cma_eigen,
-- cma_ask, cma_rank, cma_tell.
M.kernels = require "pd.core.optim"

--- A new m-by-n matrix (zeros).
function M.matrix(m, n) return A.zeros(m, n) end

--- A new f64 vector: n zeros, or the elements of the list t.
function M.vector(t)
  if type(t) == "number" then return A.zeros(t) end
  local v = A.zeros(#t)
  for i = 1, #t do v:set(i, t[i]) end
  return v
end

--- n-by-n diagonal matrix with diagonal d (a list).
function M.diag_matrix(n, d)
  local m = A.zeros(n, n)
  for i = 1, n do m:set(i, i, d[i]) end
  return m
end

--- An m x n f64 array whose rows are the m lists of Z (n numbers each).
function M.from_rows(Z) return A.array(Z) end

--- rows(Z) * T for a list of row vectors Z and an n x n matrix T: the
-- list of row vectors z_k' T.  One gemm.
function M.rows_times(Z, T)
  return A.array(Z):matmul(T):totable()
end

--- Run BLAS and LAPACK on one thread until the returned function is
-- called: the optimisers' matrices are small, where threads only cost, and
-- a threaded BLAS may sum in a different order from run to run, which would
-- break "same seed, same result".
function M.single_thread()
  if not linalg.threads then return function() end end
  local old = linalg.threads(1)
  return function() linalg.threads(old) end
end

--- Matrices in checkpoints: pack(m) gives a plain table, unpack(t) the
-- matrix back, bit for bit.
function M.is_matrix(v) return A.isarray(v) end
function M.pack(m)
  if m:ndim() == 1 then return { __matrix = m:totable(), rows = #m } end   -- a vector
  local r, c = m:shape()
  local flat, k = {}, 0
  for i = 1, r do
    for j = 1, c do k = k + 1; flat[k] = m:get(i, j) end
  end
  return { __matrix = flat, rows = r, cols = c }
end
function M.unpack(t)
  if not t.cols then return M.vector(t.__matrix) end
  local m = A.zeros(t.rows, t.cols)
  local k = 0
  for i = 1, t.rows do
    for j = 1, t.cols do k = k + 1; m:set(i, j, t.__matrix[k]) end
  end
  return m
end

return M
