--- pd.optim.la: the few numerical kernels the optimisers need, in one place.
--
-- Every optimiser in pd.optim goes through this file for its random numbers
-- and its linear algebra, so that moving them onto native arrays
-- (pd.array, pd.linalg.eigh on LAPACKE, pd.random) is a change to this file
-- only.  Until the arrays branch is merged they are plain Lua on flat
-- tables.
--
-- Conventions.  A vector is a Lua list of n numbers.  A square matrix is a
-- flat list of n*n numbers, row-major: element (i, j) is m[(i-1)*n + j].
-- Everything here runs identically under Lua 5.4 and LuaJIT 2.1 (floats
-- only, no integer division, no bit operators), so a seed gives the same
-- stream on both.
local M = {}

local sqrt, log, cos, floor, abs = math.sqrt, math.log, math.cos, math.floor, math.abs

---------------------------------------------------------------------------
-- Random numbers: MRG32k3a (L'Ecuyer, "Good parameters and implementations
-- for combined multiple recursive random number generators", Operations
-- Research 47(1), 1999), in its floating-point form, which is exact in
-- IEEE doubles.  The state is six numbers in a plain table, so it can be
-- written to a checkpoint and read back bit for bit.
---------------------------------------------------------------------------
local M1, M2 = 4294967087.0, 4294944443.0
local NORM = 2.328306549295727688e-10
local A12, A13N, A21, A23N = 1403580.0, 810728.0, 527612.0, 1370589.0

local Rng = {}
Rng.__index = Rng
M.Rng = Rng

--- A new generator for integer seed `seed` (any number; its integer part
-- and sign are used), stream `stream` (default 0).  Different (seed,
-- stream) pairs give unrelated sequences.
function M.rng(seed, stream)
  seed = floor(abs(tonumber(seed) or 0)) % 4294967296
  stream = floor(abs(tonumber(stream) or 0)) % 4294967296
  -- Fill the state with an LCG (exact in doubles: 69069 * 2^32 < 2^53).
  local x = (seed * 69069 + stream * 1013904223 + 12345) % 4294967296
  local s = {}
  for i = 1, 6 do
    x = (x * 69069 + 1) % 4294967296
    local m = i <= 3 and M1 or M2
    s[i] = x % m
  end
  if s[1] + s[2] + s[3] == 0 then s[1] = 12345 end
  if s[4] + s[5] + s[6] == 0 then s[4] = 12345 end
  local r = setmetatable({ s = s, spare = false }, Rng)
  for _ = 1, 8 do r:uniform() end   -- let the LCG's structure wash out
  return r
end

--- Re-attach the methods to a generator table read back from a checkpoint.
function M.rng_restore(t) return setmetatable(t, Rng) end

--- Uniform double in (0, 1).
function Rng:uniform()
  local s = self.s
  local p1 = A12 * s[2] - A13N * s[1]
  p1 = p1 - floor(p1 / M1) * M1
  if p1 < 0 then p1 = p1 + M1 end
  s[1], s[2] = s[2], s[3]; s[3] = p1
  local p2 = A21 * s[6] - A23N * s[4]
  p2 = p2 - floor(p2 / M2) * M2
  if p2 < 0 then p2 = p2 + M2 end
  s[4], s[5] = s[5], s[6]; s[6] = p2
  if p1 > p2 then return (p1 - p2) * NORM end
  return (p1 - p2 + M1) * NORM
end

--- Uniform in [a, b).
function Rng:range(a, b) return a + (b - a) * self:uniform() end

--- Integer uniform in 1..n.
function Rng:int(n)
  local k = floor(self:uniform() * n) + 1
  if k > n then k = n end
  return k
end

--- Standard normal (Box-Muller, both values used).
function Rng:normal()
  if self.spare then
    local v = self.spare_value
    self.spare = false
    return v
  end
  local u1, u2 = self:uniform(), self:uniform()
  local r = sqrt(-2 * log(u1))
  local t = 6.283185307179586 * u2
  self.spare, self.spare_value = true, r * math.sin(t)
  return r * cos(t)
end

---------------------------------------------------------------------------
-- Dense matrices (flat, row-major)
---------------------------------------------------------------------------

--- n-by-n identity.
function M.eye(n)
  local m = {}
  for i = 1, n do
    local o = (i - 1) * n
    for j = 1, n do m[o + j] = (i == j) and 1.0 or 0.0 end
  end
  return m
end

--- y = B * (d .* z): the sampling transform of CMA-ES (B orthogonal, d the
-- square roots of C's eigenvalues).  Returns a new list.
function M.bdz(B, d, z, n)
  local dz = {}
  for j = 1, n do dz[j] = d[j] * z[j] end
  local y = {}
  for i = 1, n do
    local o, s = (i - 1) * n, 0.0
    for j = 1, n do s = s + B[o + j] * dz[j] end
    y[i] = s
  end
  return y
end

--- C^(-1/2) y = B diag(1/d) B' y.  Returns a new list.
function M.invsqrt_times(B, d, y, n)
  local t = {}
  for j = 1, n do t[j] = 0.0 end
  for i = 1, n do                  -- t = B' y
    local o, yi = (i - 1) * n, y[i]
    for j = 1, n do t[j] = t[j] + B[o + j] * yi end
  end
  for j = 1, n do t[j] = t[j] / d[j] end
  local r = {}
  for i = 1, n do
    local o, s = (i - 1) * n, 0.0
    for j = 1, n do s = s + B[o + j] * t[j] end
    r[i] = s
  end
  return r
end

--- In place: C <- decay*C + sum_k w[k] * v_k v_k'  (vs: list of vectors).
-- The covariance update of CMA-ES (rank one and rank mu in one pass).
-- Only the upper triangle is computed; it is mirrored at the end.
function M.rank_update(C, n, decay, vs, w)
  local K = #vs
  for i = 1, n do
    local o = (i - 1) * n
    for j = i, n do C[o + j] = C[o + j] * decay end
  end
  for k = 1, K do
    local v, wk = vs[k], w[k]
    if wk ~= 0 then
      for i = 1, n do
        local o, a = (i - 1) * n, wk * v[i]
        if a ~= 0 then
          for j = i, n do C[o + j] = C[o + j] + a * v[j] end
        end
      end
    end
  end
  for i = 2, n do
    for j = 1, i - 1 do C[(i - 1) * n + j] = C[(j - 1) * n + i] end
  end
end

--- Symmetric eigendecomposition A = B diag(e) B' by cyclic Jacobi
-- rotations (Golub & Van Loan, "Matrix Computations", section 8.5).
-- Returns e (list of n eigenvalues) and B (flat, eigenvectors as columns).
-- A is not changed.
function M.eigh(A, n)
  local a = {}
  for k = 1, n * n do a[k] = A[k] end
  local v = M.eye(n)
  for _ = 1, 60 do
    local off, diag = 0.0, 0.0
    for i = 1, n do
      local o = (i - 1) * n
      diag = diag + a[o + i] * a[o + i]
      for j = i + 1, n do off = off + a[o + j] * a[o + j] end
    end
    if off <= 1e-30 * diag or off == 0 then break end
    for p = 1, n - 1 do
      local op = (p - 1) * n
      for q = p + 1, n do
        local oq = (q - 1) * n
        local apq = a[op + q]
        if apq ~= 0 then
          local app, aqq = a[op + p], a[oq + q]
          local theta = (aqq - app) / (2 * apq)
          local t
          if theta >= 0 then t = 1 / (theta + sqrt(1 + theta * theta))
          else t = -1 / (-theta + sqrt(1 + theta * theta)) end
          local c = 1 / sqrt(1 + t * t)
          local s = t * c
          for k = 1, n do           -- columns p and q (a is symmetric)
            local ok = (k - 1) * n
            local akp, akq = a[ok + p], a[ok + q]
            a[ok + p] = c * akp - s * akq
            a[ok + q] = s * akp + c * akq
          end
          for k = 1, n do           -- rows p and q
            local apk, aqk = a[op + k], a[oq + k]
            a[op + k] = c * apk - s * aqk
            a[oq + k] = s * apk + c * aqk
          end
          for k = 1, n do
            local ok = (k - 1) * n
            local vkp, vkq = v[ok + p], v[ok + q]
            v[ok + p] = c * vkp - s * vkq
            v[ok + q] = s * vkp + c * vkq
          end
        end
      end
    end
  end
  local e = {}
  for i = 1, n do e[i] = a[(i - 1) * n + i] end
  return e, v
end

--- Euclidean norm.
function M.norm(x)
  local s = 0.0
  for i = 1, #x do s = s + x[i] * x[i] end
  return sqrt(s)
end

return M
