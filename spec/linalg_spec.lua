-- pd.linalg and the matrix methods of pd.array (docs/arrays.md): values
-- checked against known results, eigh against matrices of known spectra.
local pd = require "pd"

local close, same = require("helper").approx(1e-10)

-- largest |a - b| over all elements
local function maxdiff(a, b) return pd.math.abs(a - b):max() end

describe("matmul and dot", function()
  local A = pd.array { { 1, 2, 3 }, { 4, 5, 6 } }
  local B = pd.array { { 7, 8 }, { 9, 10 }, { 11, 12 } }

  it("multiplies matrices, matrix-vector and vector-matrix", function()
    same({ { 58, 64 }, { 139, 154 } }, A:matmul(B))
    same({ 14, 32 }, A:matmul(pd.array { 1, 2, 3 }))
    same({ 9, 12, 15 }, pd.array { 1, 2 }:matmul(A))
    assert.equals(14, pd.array { 1, 2, 3 }:matmul(pd.array { 1, 2, 3 }))
    same({ { 58, 64 }, { 139, 154 } }, pd.linalg.matmul(A, B))
  end)

  it("reads transposed and sliced views in place, with the right result", function()
    same({ { 14, 32 }, { 32, 77 } }, A:matmul(A:T()))
    same({ { 17, 22, 27 }, { 22, 29, 36 }, { 27, 36, 45 } }, A:T():matmul(A))
    same({ { 58, 64 }, { 139, 154 } }, A:T():T():matmul(B:T():copy():T()))
    local big = pd.range(20):reshape(4, 5)
    local sub = big:slice(2, 3)                 -- rows 2..3: ld 5
    same({ 6 * 1 + 7 + 8 + 9 + 10, 11 + 12 + 13 + 14 + 15 }, sub:matmul(pd.ones(5)))
    same({ 6 + 11, 7 + 12, 8 + 13, 9 + 14, 10 + 15 }, pd.ones(2):matmul(sub))
    same({ { 34, 38, 42, 46, 50 } }, pd.ones(1, 4):matmul(big))
    same({ 38, 42 }, big:T():slice(2, 3):matmul(pd.ones(4)))   -- columns 2..3 of big
    same({ { 38, 42 } }, pd.ones(1, 4):matmul(big:T():slice(2, 3):T()))
    assert.equals(1 * 2 + 2 * 5, A:col(2):dot(pd.array { 1, 2 }))
    assert.equals(2 * 3 + 5 * 6, A:col(2):dot(A:col(3)))
  end)

  it("handles f32 and refuses integers and mismatches", function()
    local a32 = A:astype("f32")
    local c = a32:matmul(B:astype("f32"))
    assert.equals("f32", c:dtype())
    same({ { 58, 64 }, { 139, 154 } }, c)
    assert.equals(14, pd.array({ 1, 2, 3 }, "f32"):dot(pd.array({ 1, 2, 3 }, "f32")))
    assert.equals(14, pd.array({ 1, 2, 3 }, "i32"):dot(pd.array({ 1, 2, 3 }, "i32")))
    assert.error_matches(function() A:matmul(A) end, "shape mismatch in matmul")
    assert.error_matches(function() A:matmul(a32) end, "dtype mismatch in matmul: f64 and f32")
    assert.error_matches(function() A:astype("i32"):matmul(B:astype("i32")) end, "needs f64 or f32")
    assert.error_matches(function() pd.array { 1, 2 }:dot(pd.array { 1 }) end, "shape mismatch in dot")
  end)

  it("makes outer products", function()
    same({ { 3, 4 }, { 6, 8 }, { 9, 12 } }, pd.linalg.outer(pd.array { 1, 2, 3 }, pd.array { 3, 4 }))
  end)

  it("updates in place: add_outer (ger) and add_matmul (gemm)", function()
    local C = pd.eye(2)
    C:add_outer(pd.array { 1, 2 }, 0.5)         -- y defaults to x
    same({ { 1.5, 1 }, { 1, 3 } }, C)
    C:add_outer(pd.array { 1, 0 }, pd.array { 0, 1 }, 2)
    same({ { 1.5, 3 }, { 1, 3 } }, C)
    C:T():add_outer(pd.array { 1, 0 }, pd.array { 0, 1 }, 1)  -- on a transposed view
    same({ { 1.5, 3 }, { 2, 3 } }, C)
    local D = pd.ones(2, 2)
    D:add_matmul(A, B, 1, 2)                    -- D = 2 D + A B
    same({ { 60, 66 }, { 141, 156 } }, D)
    assert.error_matches(function() D:add_matmul(B, A) end, "shape mismatch in add_matmul")
    assert.error_matches(function() C:add_outer(pd.array { 1, 2, 3 }) end, "shape mismatch in add_outer")
  end)
end)

describe("matmul on random shapes and views", function()
  -- every way BLAS may be handed an operand (contiguous, transposed,
  -- row-sliced, a block with a leading dimension, a row or column vector)
  -- against a triple loop in Lua
  local g = pd.random.new(99)
  local function mat(r, c, d, kind)
    if kind == "T" then return g:uniform(-1, 1, c, r):astype(d):T() end
    if kind == "block" then return g:uniform(-1, 1, r + 2, c + 3):astype(d):block(2, r + 1, 2, c + 1) end
    if kind == "slice" then return g:uniform(-1, 1, r + 2, c):astype(d):slice(2, r + 1) end
    if kind == "Tblock" then return g:uniform(-1, 1, c + 1, r + 2):astype(d):block(2, c + 1, 1, r):T() end
    return g:uniform(-1, 1, r, c):astype(d)
  end
  local function vec(n, d, kind)
    if kind == "col" then return g:uniform(-1, 1, n, 3):astype(d):col(2) end
    return g:uniform(-1, 1, n):astype(d)
  end
  local kinds = { "plain", "T", "block", "slice", "Tblock" }

  it("agrees with a triple loop for f64 and f32", function()
    for case = 1, 120 do
      local d = case % 2 == 0 and "f64" or "f32"
      local tol = d == "f64" and 1e-12 or 1e-5
      local m, k, n = g:integers(1, 6), g:integers(1, 6), g:integers(1, 6)
      local A = mat(m, k, d, kinds[g:integers(1, #kinds)])
      local B = mat(k, n, d, kinds[g:integers(1, #kinds)])
      local C = A:matmul(B)
      for i = 1, m do
        for j = 1, n do
          local s = 0
          for l = 1, k do s = s + A:get(i, l) * B:get(l, j) end
          assert.is_true(math.abs(s - C:get(i, j)) < tol, ("case %d %s (%d,%d)"):format(case, d, i, j))
        end
      end
      local x = vec(k, d, case % 3 == 0 and "col" or "plain")
      local y = A:matmul(x)
      for i = 1, m do
        local s = 0
        for l = 1, k do s = s + A:get(i, l) * x[l] end
        assert.is_true(math.abs(s - y[i]) < tol, ("case %d gemv %d"):format(case, i))
      end
      local v = vec(m, d, case % 3 == 1 and "col" or "plain")
      local w = v:matmul(A)
      for j = 1, k do
        local s = 0
        for l = 1, m do s = s + v[l] * A:get(l, j) end
        assert.is_true(math.abs(s - w[j]) < tol, ("case %d vec-mat %d"):format(case, j))
      end
      -- in place into a view of a bigger matrix
      local big = pd.zeros(m + 1, n + 2, d)
      big:block(2, m + 1, 2, n + 1):add_matmul(A, B)
      assert.is_true(pd.math.abs(big:block(2, m + 1, 2, n + 1) - C):max() < tol, "add_matmul into a block")
      assert.equals(0, big:row(1):norm() + big:col(1):norm() + big:col(n + 2):norm())
    end
  end)
end)

describe("the CMA-ES covariance update (docs/arrays.md)", function()
  it("equals the same update written as loops", function()
    local mu, n = 5, 4
    local g = pd.random.new(1)
    local Y, pc = g:normal(0, 1, mu, n), g:normal(0, 1, n)
    local w = pd.array { 0.35, 0.25, 0.2, 0.12, 0.08 }
    local c1, cmu = 0.1, 0.2
    local C = pd.eye(n)
    C:scale(1 - c1 - cmu)
    C:add_outer(pc, c1)
    C:add_matmul((Y * w:reshape(mu, 1)):T(), Y, cmu)
    for i = 1, n do
      for j = 1, n do
        local s = (i == j and 1 - c1 - cmu or 0) + c1 * pc[i] * pc[j]
        for k = 1, mu do s = s + cmu * w[k] * Y:get(k, i) * Y:get(k, j) end
        assert.is_true(close(s, C:get(i, j), 1e-14), i .. "," .. j)
      end
    end
  end)
end)

describe("OpenBLAS controls", function()
  it("reads and sets the thread count, and names the build", function()
    local before = pd.linalg.threads()
    assert.is_true(before >= 1)
    assert.equals(before, pd.linalg.threads(1))
    assert.equals(1, pd.linalg.threads(before))
    assert.equals(before, pd.linalg.threads())
    assert.matches("OpenBLAS", pd.linalg.config())
    assert.error_matches(function() pd.linalg.threads(0) end, "threads must be")
  end)
end)

describe("eigh", function()
  it("finds the spectrum of a diagonal matrix, ascending", function()
    local w, V = pd.linalg.eigh(pd.array { { 3, 0, 0 }, { 0, 1, 0 }, { 0, 0, 2 } })
    same({ 1, 2, 3 }, w)
    same({ { 0, 0, 1 }, { 1, 0, 0 }, { 0, 1, 0 } }, pd.math.abs(V))
  end)

  it("gives eigenvectors as columns: [[2,1],[1,2]] has 1 for (1,-1) and 3 for (1,1)", function()
    local w, V = pd.linalg.eigh(pd.array { { 2, 1 }, { 1, 2 } })
    same({ 1, 3 }, w)
    local v1, v3 = V:col(1), V:col(2)
    assert.is_true(close(0, v1[1] + v1[2]))
    assert.is_true(close(0, v3[1] - v3[2]))
    assert.is_true(close(1, v1:norm())); assert.is_true(close(1, v3:norm()))
  end)

  it("matches the known spectrum 2 - 2 cos(k pi / (n + 1)) of the 1-D Laplacian", function()
    for _, n in ipairs { 7, 60 } do
      local T = pd.zeros(n, n)
      for i = 1, n do
        T:set(i, i, 2)
        if i < n then T:set(i, i + 1, -1); T:set(i + 1, i, -1) end
      end
      local w, V = pd.linalg.eigh(T)
      for k = 1, n do
        assert.is_true(close(2 - 2 * math.cos(k * math.pi / (n + 1)), w[k], 1e-12), k)
      end
      -- A V = V diag(w), and V is orthogonal
      assert.is_true(maxdiff(T:matmul(V), V * w) < 1e-12)
      assert.is_true(maxdiff(V:T():matmul(V), pd.eye(n)) < 1e-12)
    end
  end)

  it("recovers a chosen spectrum from Q diag(d) Q^T (Q a Householder reflection)", function()
    local n = 30
    local v = pd.random.new(7):normal(0, 1, n)
    local Q = pd.eye(n)
    Q:add_outer(v, -2 / v:dot(v))                -- I - 2 v v^T / v^T v
    local d = pd.linspace(-5, 10, n)
    local A = (Q * d):matmul(Q:T())              -- Q diag(d) Q^T (column scaling)
    local w = pd.linalg.eigh(A)
    assert.is_true(maxdiff(w, d) < 1e-12)
  end)

  it("reads only the upper triangle, and refuses non-square input", function()
    local w = pd.linalg.eigh(pd.array { { 2, 1 }, { 99, 2 } })
    same({ 1, 3 }, w)
    assert.error_matches(function() pd.linalg.eigh(pd.zeros(2, 3)) end, "square")
    assert.error_matches(function() pd.linalg.eigh(pd.zeros(2, 2, "i32")) end, "f64 or f32")
  end)
end)

describe("cholesky and solve", function()
  it("factors a positive definite matrix (a = L L^T)", function()
    local A = pd.array { { 4, 12, -16 }, { 12, 37, -43 }, { -16, -43, 98 } }
    local L = pd.linalg.cholesky(A)
    same({ { 2, 0, 0 }, { 6, 1, 0 }, { -8, 5, 3 } }, L)
    assert.is_true(maxdiff(L:matmul(L:T()), A) < 1e-12)
    assert.error_matches(function() pd.linalg.cholesky(pd.array { { 1, 2 }, { 2, 1 } }) end,
                         "not positive definite %(leading minor 2%)")
  end)

  it("solves a x = b for one and several right-hand sides", function()
    local A = pd.array { { 3, 1 }, { 1, 2 } }
    same({ 2, 3 }, pd.linalg.solve(A, pd.array { 9, 8 }))
    same({ { 2, 1 }, { 3, 0 } }, pd.linalg.solve(A, pd.array { { 9, 3 }, { 8, 1 } }))
    same({ 2, 3 }, pd.linalg.solve(A:T(), pd.array { 9, 8 }))   -- symmetric: same
    assert.is_nil(pd.linalg.solve(pd.eye(3), pd.ones(3)):sum() ~= 3 or nil)
    assert.error_matches(function() pd.linalg.solve(pd.array { { 1, 2 }, { 2, 4 } }, pd.ones(2)) end, "singular")
    assert.error_matches(function() pd.linalg.solve(A, pd.ones(3)) end, "shape mismatch in solve")
  end)

  it("inverts and takes determinants", function()
    local A = pd.array { { 4, 7 }, { 2, 6 } }
    same({ { 0.6, -0.7 }, { -0.2, 0.4 } }, pd.linalg.inv(A))
    assert.is_true(maxdiff(A:matmul(pd.linalg.inv(A)), pd.eye(2)) < 1e-14)
    assert.is_true(close(10, pd.linalg.det(A)))
    assert.is_true(close(-10, pd.linalg.det(pd.array { { 2, 6 }, { 4, 7 } })))   -- a row swap
    assert.is_true(close(24, pd.linalg.det(pd.array { { 2, 0, 0 }, { 0, 3, 0 }, { 0, 0, 4 } })))
    assert.equals(0, pd.linalg.det(pd.array { { 1, 2 }, { 2, 4 } }))
    assert.error_matches(function() pd.linalg.inv(pd.array { { 1, 2 }, { 2, 4 } }) end, "singular")
  end)
end)

-- OpenBLAS and LAPACKE are dlopened on first use (lua/blas.h): a process
-- that lacks them keeps every array operation but linear algebra, which
-- raises naming the library.  PDLUA_LAPACKE / PDLUA_OPENBLAS point the
-- loader at a library that does not exist.
describe("BLAS/LAPACK loaded on first use", function()
  local H = require "spec.helper"
  local script = [[
    local pd = require "pd"
    local a = pd.array { { 2, 1 }, { 1, 3 } }
    local b = a + a
    b:add(a, 2)
    io.write("sum ", b:sum(), "\n")
    io.write("available ", tostring(select(2, pd.linalg.available())), "\n")
    local ok, err = pcall(pd.linalg.det, a)
    io.write("det ", tostring(ok), " ", tostring(err), "\n")
    ok, err = pcall(function() return a:matmul(a) end)
    io.write("matmul ", tostring(ok), " ", tostring(err), "\n")
  ]]
  for _, case in ipairs { { "PDLUA_LAPACKE", "liblapacke-missing.so.9" },
                          { "PDLUA_OPENBLAS", "libopenblas-missing.so.9" } } do
    it("without " .. case[1]:lower():sub(7) .. ": arrays work, linalg raises naming it", function()
      local f = H.tmpfile(script, ".lua")
      local out, err, rc = H.sh(case[1] .. "=" .. case[2] .. " " .. H.q(H.pdlua) .. " " .. H.q(f))
      os.remove(f)
      assert.equals(0, rc, err)
      assert.matches("sum 28", out, 1, true)
      assert.matches("available cannot load " .. case[2], out, 1, true)
      assert.matches("det false pd.linalg.det: BLAS/LAPACK not available: cannot load " .. case[2], out, 1, true)
      assert.matches("pd.linalg.matmul: BLAS/LAPACK not available: cannot load " .. case[2], out, 1, true)
    end)
  end

  it("does not load the libraries until linear algebra is called", function()
    local out, err, rc = H.pdlua_run([[-e 'local pd = require "pd"; local a = pd.array{1, 2} + 1; a:add(a, 3)
      local f = io.open("/proc/self/maps"); local m = f:read("a"); f:close()
      print(m:find("openblas", 1, true) and "loaded" or "not loaded")
      pd.linalg.dot(a, a)
      f = io.open("/proc/self/maps"); m = f:read("a"); f:close()
      print(m:find("openblas", 1, true) and "loaded" or "not loaded")']])
    assert.equals(0, rc, err)
    assert.equals("not loaded\nloaded\n", out)
  end)
end)
