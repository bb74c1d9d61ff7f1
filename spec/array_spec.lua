-- pd.array (docs/arrays.md): construction, dtypes, indexing, views that
-- share memory, element-wise arithmetic with broadcasting, reductions,
-- in-place methods, errors, the wire form, and the GC of views.
local pd = require "pd"

local luajit = pd.vm:find("LuaJIT") ~= nil

local close, same = require("helper").approx(1e-12)

describe("pd.array construction", function()
  it("makes 1-D and 2-D f64 arrays from lists", function()
    local a = pd.array { 1, 2, 3 }
    assert.equals(3, #a)
    assert.equals(3, a:shape())
    assert.equals("f64", a:dtype())
    same({ 1, 2, 3 }, a)
    local m = pd.array { { 1, 2, 3 }, { 4, 5, 6 } }
    local r, c = m:shape()
    assert.equals(2, r); assert.equals(3, c)
    assert.equals(2, #m)
    assert.equals(6, m:get(2, 3))
    same({ { 1, 2, 3 }, { 4, 5, 6 } }, m)
  end)

  it("takes every dtype and keeps integer values as integers", function()
    for _, d in ipairs { "f64", "f32", "i32", "i64", "u8" } do
      local a = pd.array({ 1, 2, 250 }, d)
      assert.equals(d, a:dtype())
      same({ 1, 2, 250 }, a)
    end
    if not luajit then
      assert.equals(math.type(pd.array({ 7 }, "i64")[1]), "integer")
      assert.equals(math.type(pd.array({ 7 })[1]), "float")
    end
    assert.equals(0.5, pd.array({ 0.5 }, "f32")[1])
  end)

  it("zeros, ones, full, eye, range, linspace", function()
    same({ 0, 0, 0 }, pd.zeros(3))
    local z = pd.zeros(2, 3, "i32")
    assert.equals("i32", z:dtype()); same({ { 0, 0, 0 }, { 0, 0, 0 } }, z)
    same({ { 1, 1 } }, pd.ones(1, 2))
    same({ 7, 7 }, pd.full(2, 7))
    same({ { 5, 5, 5 } }, pd.full(1, 3, 5, "i32"))
    same({ { 1, 0 }, { 0, 1 } }, pd.eye(2))
    same({ 1, 2, 3, 4 }, pd.range(4))
    same({ 2, 4, 6 }, pd.range(2, 7, 2))
    same({ 5, 4, 3 }, pd.range(5, 3, -1))
    assert.equals("i64", pd.range(3, "i64"):dtype())
    same({ 0, 0.25, 0.5, 0.75, 1 }, pd.linspace(0, 1, 5))
    assert.equals(0, #pd.range(0))
  end)

  it("rejects ragged rows, non-numbers, bad dtypes and out-of-range integers", function()
    assert.has_error(function() pd.array { { 1, 2 }, { 3 } } end, "pd.array: row 2 has 1 elements, row 1 has 2")
    assert.error_matches(function() pd.array { 1, "x" } end, "element %[2%]: number expected, got string")
    assert.error_matches(function() pd.array({ 1 }, "f16") end, "unknown dtype 'f16'")
    assert.error_matches(function() pd.array({ 256 }, "u8") end, "256 out of range for dtype u8")
    assert.error_matches(function() pd.array({ 1.5 }, "i32") end, "is not an integer")
    assert.error_matches(function() pd.zeros(-1) end, "negative size")
  end)

  it("copies an array, converting with astype (saturating, truncating)", function()
    local a = pd.array { -3.7, 0.5, 300 }
    same({ 0, 0, 255 }, a:astype("u8"))
    same({ -3, 0, 300 }, a:astype("i32"))
    local b = pd.array(a)
    b[1] = 9
    assert.equals(-3.7, a[1])
  end)
end)

describe("pd.array indexing", function()
  it("is 1-based and raises on out-of-range indices", function()
    local a = pd.array { 10, 20, 30 }
    assert.equals(10, a[1]); assert.equals(30, a[3])
    assert.error_matches(function() return a[0] end, "index 0 out of range 1..3")
    assert.error_matches(function() return a[4] end, "index 4 out of range 1..3")
    assert.error_matches(function() return a[1.5] end, "must be an integer")
    local m = pd.zeros(2, 3)
    assert.error_matches(function() m:get(1, 4) end, "column index 4 out of range 1..3")
    assert.error_matches(function() m:set(3, 1, 0) end, "row index 3 out of range 1..2")
    assert.error_matches(function() m.foo = 1 end, "cannot set")
  end)

  it("iterates with a:ipairs() (elements, or rows of a 2-D array)", function()
    local seen = {}
    for i, v in pd.array { 5, 6, 7 }:ipairs() do seen[i] = v end
    assert.same({ 5, 6, 7 }, seen)
    local sums = {}
    for i, row in pd.array { { 1, 2 }, { 3, 4 } }:ipairs() do sums[i] = row:sum() end
    assert.same({ 3, 7 }, sums)
    for _ in pd.zeros(0):ipairs() do error("no items") end
  end)

  it("sets elements with a[i] = v and a:set(i, j, v)", function()
    local a = pd.zeros(3)
    a[2] = 5
    same({ 0, 5, 0 }, a)
    local m = pd.zeros(2, 2)
    assert.equals(m, m:set(1, 2, 7))
    m[2] = { 8, 9 }               -- a whole row from a list
    same({ { 0, 7 }, { 8, 9 } }, m)
  end)
end)

describe("pd.array views", function()
  it("row, col, T and a[i] share memory with their parent", function()
    local m = pd.array { { 1, 2, 3 }, { 4, 5, 6 } }
    local r, c, t = m:row(2), m:col(3), m:T()
    assert.is_true(r:isview() and c:isview() and t:isview())
    assert.is_false(c:iscontiguous())
    r[1] = 40                     -- write through the row
    assert.equals(40, m:get(2, 1))
    c[1] = 30                     -- write through the column
    assert.equals(30, m:get(1, 3))
    t:set(3, 2, 60)               -- T: (3, 2) is m's (2, 3)
    assert.equals(60, m:get(2, 3))
    m[1][2] = 20                  -- a[i] of a 2-D array is row i
    assert.equals(20, m:get(1, 2))
    same({ 30, 60 }, c)
    same({ { 1, 40 }, { 20, 5 }, { 30, 60 } }, t)
  end)

  it("views of views reach the same memory; slice and reshape too", function()
    local m = pd.range(12):reshape(3, 4)
    local cc = m:T():row(2)       -- column 2 of m
    same({ 2, 6, 10 }, cc)
    cc:scale(-1)
    same({ -2, -6, -10 }, m:col(2))
    local s = m:slice(2, 3)
    assert.equals(2, #s)
    s:fill(0)
    same({ { 1, -2, 3, 4 }, { 0, 0, 0, 0 }, { 0, 0, 0, 0 } }, m)
    assert.error_matches(function() m:T():reshape(12) end, "contiguous")
    assert.error_matches(function() m:reshape(5) end, "cannot take shape")
  end)

  it("block views a sub-matrix: a 5-point stencil on a grid's interior", function()
    local n = 5
    local u = pd.zeros(n, n)
    u:set(3, 3, 1)
    local inner = u:block(2, n - 1, 2, n - 1)
    assert.is_true(inner:isview())
    local lap = u:block(1, n - 2, 2, n - 1) + u:block(3, n, 2, n - 1)
              + u:block(2, n - 1, 1, n - 2) + u:block(2, n - 1, 3, n) - inner * 4
    inner:add(lap, 0.1)
    same({ { 0, 0, 0, 0, 0 }, { 0, 0, 0.1, 0, 0 }, { 0, 0.1, 0.6, 0.1, 0 },
           { 0, 0, 0.1, 0, 0 }, { 0, 0, 0, 0, 0 } }, u, 1e-15)
    assert.equals(0, #u:block(2, 1, 1, 5))
    assert.error_matches(function() u:block(0, 2, 1, 2) end, "block rows 0..2 out of range 1..5")
    assert.error_matches(function() u:block(1, 2, 4, 6) end, "block columns 4..6 out of range 1..5")
  end)

  it("copy and arithmetic on views give new contiguous arrays", function()
    local m = pd.array { { 1, 2 }, { 3, 4 } }
    local t = m:T():copy()
    assert.is_true(t:iscontiguous()); assert.is_false(t:isview())
    t[1][1] = 100
    assert.equals(1, m:get(1, 1))
    same({ { 2, 6 }, { 4, 8 } }, m:T() * 2)
    same({ 3, 7 }, m:col(1) + m:col(2))
    same({ 4, 6 }, m:row(1) + m:row(2))
  end)

  it("keeps a parent alive while a view of it is reachable (GC-safe in any order)", function()
    local views = {}
    for k = 1, 50 do
      local m = pd.range(1000):reshape(10, 100)
      views[k] = m:T():row(3)     -- parent m unreachable after this
    end
    collectgarbage(); collectgarbage()
    for k = 1, 50 do
      assert.equals(3 + 100 * 9, views[k][10])
      assert.equals(3, views[k][1])
    end
    views = nil
    collectgarbage(); collectgarbage()
    -- parents dying before views and views before parents, interleaved
    for _ = 1, 200 do
      local p = pd.zeros(64, 64)
      local v = p:col(5)
      p = nil
      if _ % 2 == 0 then collectgarbage("step") end
      v:fill(1)
      assert.equals(64, v:sum())
    end
    collectgarbage()
  end)
end)

describe("pd.array element-wise arithmetic", function()
  local a = pd.array { 1, 2, 3 }
  local b = pd.array { 4, 5, 6 }

  it("does + - * / ^ and unary minus with arrays and scalars", function()
    same({ 5, 7, 9 }, a + b)
    same({ -3, -3, -3 }, a - b)
    same({ 4, 10, 18 }, a * b)
    same({ 0.25, 0.4, 0.5 }, a / b)
    same({ 1, 32, 729 }, a ^ b)
    same({ 1, 4, 9 }, a ^ 2)
    same({ 3, 4, 5 }, a + 2)
    same({ 1, 0, -1 }, 2 - a)
    same({ 2, 1, 2 / 3 }, 2 / a)
    same({ 2, 4, 8 }, 2 ^ a)
    same({ -1, -2, -3 }, -a)
    assert.equals(-math.huge, 1 / (-pd.zeros(1))[1])        -- -0.0 stays signed
    same({ -1, 2 }, -pd.array({ 1, -2 }, "i32"))
  end)

  it("broadcasts rows and columns", function()
    local m = pd.array { { 1, 2, 3 }, { 4, 5, 6 } }
    same({ { 11, 22, 33 }, { 14, 25, 36 } }, m + pd.array { 10, 20, 30 })
    same({ { 11, 22, 33 }, { 14, 25, 36 } }, pd.array { 10, 20, 30 } + m)
    same({ { 10, 20, 30 }, { 400, 500, 600 } }, m * pd.array { { 10 }, { 100 } })
    same({ { 11, 12 }, { 21, 22 } }, pd.array { { 10 }, { 20 } } + pd.array { 1, 2 })  -- outer
    same({ { 0, 1, 2 }, { 3, 4, 5 } }, m - 1)
  end)

  it("keeps integer dtypes for + - * (wrapping), and gives f64 for / and ^", function()
    local i = pd.array({ 1, 2, 3 }, "i32")
    local s = i + i
    assert.equals("i32", s:dtype()); same({ 2, 4, 6 }, s)
    assert.equals("f64", (i / 2):dtype()); same({ 0.5, 1, 1.5 }, i / 2)
    assert.equals("f64", (i ^ 2):dtype())
    same({ 4 }, pd.array({ 250 }, "u8") + 10)   -- 260 wraps to 4
    assert.error_matches(function() return i + 0.5 end, "not an integer")
  end)

  it("raises clear errors for shape and dtype mismatches", function()
    assert.error_matches(function() return a + pd.array { 1, 2 } end, "shape mismatch in %+: %(3%) and %(2%)")
    assert.error_matches(function() return pd.zeros(2, 3) * pd.zeros(3, 2) end, "shape mismatch in %*: %(2x3%) and %(3x2%)")
    assert.error_matches(function() return a + pd.array({ 1, 2, 3 }, "f32") end, "dtype mismatch in %+: f64 and f32")
    assert.error_matches(function() return a + "x" end, "number expected, got string")
  end)

  it("works in place: add (with alpha), sub, mul, div, scale, fill, assign", function()
    local x = pd.array { 1, 2, 3 }
    assert.equals(x, x:add(b))
    same({ 5, 7, 9 }, x)
    x:add(b, -1); same({ 1, 2, 3 }, x)
    x:add(pd.array { 1, 1, 1 }:T(), 0.5); same({ 1.5, 2.5, 3.5 }, x)
    x:sub(0.5):mul(2):div(pd.array { 1, 2, 3 }); same({ 2, 2, 2 }, x)
    x:scale(0.5); same({ 1, 1, 1 }, x)
    x:fill(4); same({ 4, 4, 4 }, x)
    x:assign { 7, 8, 9 }; same({ 7, 8, 9 }, x)
    local m = pd.zeros(2, 3)
    m:add(pd.array { 1, 2, 3 })                 -- row broadcast in place
    m:col(2):add(10, 2)                         -- strided view, alpha
    same({ { 1, 22, 3 }, { 1, 22, 3 } }, m)
    assert.error_matches(function() pd.zeros(3):add(pd.zeros(2, 3)) end, "cannot take")
    local p = pd.array { { -7, 0.5, 9 }, { 3, -1, 0 } }
    p:clip(pd.array { -5, 0, 0 }, pd.array { 5, 1, 2 })        -- per-coordinate bounds
    same({ { -5, 0.5, 2 }, { 3, 0, 0 } }, p)
    same({ 1, 5, 5 }, pd.array { 1, 7, 5 }:clip(nil, 5))
    same({ 1, 3, 6, 10 }, pd.range(4):cumsum())
    same({ 1, 3, 6, 10 }, pd.array({ { 1, 2 }, { 3, 4 } }, "u8"):cumsum())
    assert.equals("i64", pd.range(3, "i32"):cumsum():dtype())
    assert.error_matches(function() pd.zeros(3, "i32"):div(2) end, "needs a float array")
  end)

  it("pd.math applies to numbers and arrays", function()
    assert.is_true(close(math.exp(1), pd.math.exp(1)))
    local x = pd.array { 0.25, 1, 4 }
    same({ 0.5, 1, 2 }, pd.math.sqrt(x))
    same({ math.log(0.25), 0, math.log(4) }, pd.math.log(x))
    same({ math.sin(1), math.cos(1) }, pd.array { pd.math.sin(1), pd.math.cos(1) })
    same({ 1, 2 }, pd.math.abs(pd.array { -1, 2 }))
    same({ math.exp(-1), 1 }, pd.math.exp(pd.array { { -1 }, { 0 } }):reshape(2))
    same({ 1, 2 }, pd.math.sqrt(pd.array({ 1, 4 }, "i32")))
    assert.equals("f32", pd.math.exp(pd.array({ 1 }, "f32")):dtype())
    same({ 1, 2, 2 }, pd.math.minimum(pd.array { 1, 5, 2 }, 2) + pd.array { 0, 0, 0 })
    same({ 3, 5, 3 }, pd.math.maximum(pd.array { 1, 5, 2 }, 3))
    same({ 1, 16 }, pd.math.sqrt(pd.array { { 1, 16 } }):row(1) ^ 2)
  end)

  it("maps a Lua function over the elements", function()
    same({ { 2, 5 }, { 10, 17 } }, pd.array { { 1, 2 }, { 3, 4 } }:map(function(v) return v * v + 1 end))
    same({ 1, 0 }, pd.array({ 3, 4 }, "i32"):map(function(v) return v % 2 end, "u8"))
  end)
end)

describe("pd.array reductions and sorting", function()
  local x = pd.array { 3, -1, 4, 1, 5, -9, 2, 6 }

  it("sum, mean, min, max, argmin, argmax, norm", function()
    assert.equals(11, x:sum())
    assert.equals(11 / 8, x:mean())
    assert.equals(-9, x:min()); assert.equals(6, x:max())
    assert.equals(6, x:argmin()); assert.equals(8, x:argmax())
    assert.is_true(close(math.sqrt(9 + 1 + 16 + 1 + 25 + 81 + 4 + 36), x:norm()))
    assert.equals(5, pd.array({ 2, 3 }, "i32"):sum())
    local m = pd.array { { 1, 2, 3 }, { 4, 5, 6 } }
    assert.equals(21, m:sum())
    same({ 5, 7, 9 }, m:sum(1))                 -- down the rows: per column
    same({ 6, 15 }, m:sum(2))                   -- along each row
    same({ 2.5, 3.5, 4.5 }, m:mean(1))
    same({ 2, 5 }, m:mean(2))
    local k, i, j = m:argmax()
    assert.equals(6, k); assert.equals(2, i); assert.equals(3, j)
    assert.equals(14, m:col(3):sum() + m:T():row(1):sum())  -- views reduce too
    assert.is_true(close(5, pd.array { 3e200, 4e200 }:norm() / 1e200))
    assert.is_true(close(5, pd.array { 3e-200, 4e-200 }:norm() / 1e-200))
    assert.error_matches(function() pd.zeros(0):min() end, "min of an empty array")
    local nan = 0 / 0
    local w = pd.array { nan, 2, -math.huge, 7, nan }
    assert.equals(-math.huge, w:min()); assert.equals(7, w:max())        -- NaN skipped
    assert.equals(3, w:argmin()); assert.equals(4, w:argmax())
    assert.equals(2, w:astype("f32"):slice(1, 2):min())
    local allnan = pd.full(5, nan):max()
    assert.is_true(allnan ~= allnan)
    assert.equals(math.huge, pd.array { 1, math.huge, 3, 4, 5, 6 }:max())
    assert.equals(0, pd.zeros(0):sum())
    local v = pd.array { 2, 4, 4, 4, 5, 5, 7, 9 }
    assert.equals(4, v:var()); assert.equals(2, v:std())            -- population
    assert.is_true(close(32 / 7, v:var(1)))                         -- sample
    assert.equals(4, v:astype("i32"):reshape(2, 4):var())
    assert.is_true(close(0, pd.full(9, 1e9 + 0.5):var()))              -- two passes: no cancellation
    assert.is_true(pd.zeros(1):var(1) ~= pd.zeros(1):var(1))          -- NaN: n <= ddof
  end)

  it("sorts, argsorts (stable, 1-based) and takes", function()
    same({ -9, -1, 1, 2, 3, 4, 5, 6 }, x:sort())
    same({ 6, 2, 4, 7, 1, 3, 5, 8 }, x:argsort())
    same({ 2, 1, 3 }, pd.array { 5, 1, 5 }:argsort())
    same({ -9, 3 }, x:take(pd.array({ 6, 1 }, "i64")))
    same({ { 4, 5 }, { 1, 2 } }, pd.array { { 1, 2 }, { 4, 5 } }:take { 2, 1 })
    assert.error_matches(function() x:take { 9 } end, "out of range 1..8")
  end)
end)

describe("pd.array wire form", function()
  it("round-trips every dtype and shape, views as their elements", function()
    for _, d in ipairs { "f64", "f32", "i32", "i64", "u8" } do
      local a = pd.array({ { 1, 2, 3 }, { 4, 5, 6 } }, d)
      local A = require "pd.core.array"
      local b = A.decode(A.encode(a))
      assert.equals(d, b:dtype()); same(a:totable(), b)
      local c = A.decode(A.encode(a:T()))
      same({ { 1, 4 }, { 2, 5 }, { 3, 6 } }, c)
    end
  end)

  it("is a header and raw little-endian bytes", function()
    local A = require "pd.core.array"
    local s = A.encode(pd.array({ 1, 258 }, "i32"))
    assert.equals("\2\1\2" .. "\1\0\0\0" .. "\2\1\0\0", s)   -- i32, 1-D, 2; then 1, 258
    assert.equals("\4\2\128\1\2" .. ("\0"):rep(256), A.encode(pd.zeros(128, 2, "u8")))
  end)

  it("rejects malformed input with an error", function()
    local A = require "pd.core.array"
    local good = A.encode(pd.array { 1, 2 })
    assert.error_matches(function() A.decode(good:sub(1, -2)) end, "do not match")
    assert.error_matches(function() A.decode(good .. "x") end, "do not match")
    assert.error_matches(function() A.decode("\9" .. good:sub(2)) end, "dtype")
    assert.error_matches(function() A.decode("\0\3" .. good:sub(3)) end, "ndim")
    assert.error_matches(function() A.decode("\0\1\255\255\255\255\255\255\127") end, "too large")
    assert.error_matches(function() A.decode("\0\1\255\255\255\255\255\255\255\255\255\255\1") end, "truncated")
    assert.error_matches(function() A.decode("\0\1\128") end, "truncated")
    assert.error_matches(function() A.decode("\0\1\128\0") end, "overlong")   -- 0 in two bytes
    assert.error_matches(function() A.decode("\0\2\1") end, "truncated")
  end)
end)

describe("pd.array under LuaJIT", function()
  it("exposes its memory to the FFI with a:ptr()", function()
    if not luajit then
      assert.equals("userdata", type(pd.zeros(1):ptr()))
      return
    end
    local ffi = require "ffi"
    local a = pd.range(5)
    local p = ffi.cast("double *", a:ptr())
    for i = 0, 4 do p[i] = p[i] * 10 end
    same({ 10, 20, 30, 40, 50 }, a)
    local m = pd.zeros(2, 3)
    local s0, s1 = m:col(2):strides()
    assert.equals(3, s0); assert.is_nil(s1)
    local q = ffi.cast("double *", m:col(2):ptr())
    q[3] = 7                                      -- next row, same column
    assert.equals(7, m:get(2, 2))
  end)
end)

describe("examples/heat_arrays.lua", function()
  it("runs and stays on the exact solution", function()
    local H = require "helper"
    local out, err, rc = H.pdlua_run("run " .. H.q(H.source .. "/examples/heat_arrays.lua") .. " 31")
    assert.equals(0, rc, err)
    assert.matches("31x31 grid, %d+ steps to t = 0%.05%d* in [%d.]+ s; relative error", out)
  end)
end)
