-- pd.array against plain Lua on many random cases: every dtype, every kind
-- of view (whole, T, row, col, slice, block), element-wise operators with
-- arrays, broadcast rows and scalars, in-place updates through views, and
-- reductions.  The reference is computed from a:totable() with ordinary Lua
-- arithmetic.  The seed is fixed, so a failure repeats; the message names
-- the case.
local pd = require "pd"

local g = pd.random.new(20261121)
local dtypes = { "f64", "f32", "i32", "i64", "u8" }

local function isint(d) return d ~= "f64" and d ~= "f32" end

-- a random r x c array of dtype d with values that stay exact in every
-- dtype under + - * of two of them (small integers, or quarters for floats)
local function rand(r, c, d)
  local a = pd.zeros(r, c, d)
  for i = 1, r do
    for j = 1, c do
      local v = g:integers(0, 10)
      if not isint(d) then v = (g:integers(-40, 40)) / 4 end
      a:set(i, j, v)
    end
  end
  return a
end

-- a view of a fresh random array, of the given kind, that is r x c (or 1-D)
local function view(kind, r, c, d)
  if kind == "whole" then return rand(r, c, d) end
  if kind == "T" then return rand(c, r, d):T() end
  if kind == "block" then return rand(r + 2, c + 3, d):block(2, r + 1, 3, c + 2) end
  if kind == "slice" then return rand(r + 3, c, d):slice(2, r + 1) end
  if kind == "row" then return rand(3, c, d):row(2) end
  if kind == "col" then return rand(c, 4, d):col(3) end
end

local function flat(t)
  if pd.isarray(t) then t = t:totable() end
  local out = {}
  for _, v in ipairs(t) do
    if type(v) == "table" then for _, w in ipairs(v) do out[#out + 1] = w end
    else out[#out + 1] = v end
  end
  return out
end

-- elementwise reference, with integer wrap-around of the dtype
local function wrap(v, d)
  if d == "u8" then return v % 256 end
  if d == "i32" then v = v % 4294967296; if v >= 2147483648 then v = v - 4294967296 end end
  return v
end

local function check_same(want, got, d, what)
  local w, gt = flat(want), flat(got)
  assert.equals(#w, #gt, what)
  for k = 1, #w do
    local a, b = w[k], gt[k]
    local tol = d == "f32" and 1e-6 or 1e-12
    assert.is_true(math.abs(a - b) <= tol * math.max(1, math.abs(a)), ("%s: element %d: want %s, got %s"):format(what, k, a, b))
  end
end

local function map2(ta, tb, f)
  local out = {}
  for i, v in ipairs(ta) do
    if type(v) == "table" then
      out[i] = {}
      for j, w in ipairs(v) do
        local u = type(tb) == "table" and (type(tb[i]) == "table" and tb[i][j] or tb[j]) or tb
        out[i][j] = f(w, u)
      end
    else
      out[i] = f(v, type(tb) == "table" and tb[i] or tb)
    end
  end
  return out
end

describe("pd.array on random cases", function()
  local kinds2 = { "whole", "T", "block", "slice" }
  local kinds1 = { "row", "col", "whole1" }

  it("agrees with Lua for operators, in-place updates and reductions", function()
    for case = 1, 300 do
      local d = dtypes[(case - 1) % #dtypes + 1]
      local r, c = g:integers(1, 6), g:integers(1, 7)
      local two = case % 3 ~= 0
      local kind = two and kinds2[g:integers(1, #kinds2)] or kinds1[g:integers(1, #kinds1)]
      local x = kind == "whole1" and rand(1, c, d):row(1):copy() or view(kind, r, c, d)
      local y = two and view(kinds2[g:integers(1, #kinds2)], r, c, d) or view(kinds1[g:integers(1, 2)], r, c, d)
      local what = ("case %d: %s %s %dx%d"):format(case, d, kind, r, c)
      local tx, ty = x:totable(), y:totable()
      assert.equals(x:dtype(), d, what)

      -- operators: array with array, scalar on either side
      check_same(map2(tx, ty, function(a, b) return wrap(a + b, d) end), x + y, d, what .. " x+y")
      check_same(map2(tx, ty, function(a, b) return wrap(a - b, d) end), x - y, d, what .. " x-y")
      check_same(map2(tx, ty, function(a, b) return wrap(a * b, d) end), x * y, d, what .. " x*y")
      check_same(map2(tx, 3, function(a, b) return wrap(b - a, d) end), 3 - x, d, what .. " 3-x")
      check_same(map2(tx, 2, function(a, b) return a / b end), x / 2, "f64", what .. " x/2")
      check_same(map2(tx, 2, function(a, b) return wrap(a * a, d) end), x ^ 2, isint(d) and "f64" or d, what .. " x^2")

      -- a broadcast row (2-D only)
      if two then
        local row = rand(1, c, d):row(1)
        local trow = row:totable()
        check_same(map2(tx, trow, function(a, b) return wrap(a + b, d) end), x + row, d, what .. " x+row")
      end

      -- reductions
      local fx = flat(tx)
      local s, mn, mx, imn, imx, ss = 0, math.huge, -math.huge, 0, 0, 0
      for k, v in ipairs(fx) do
        s = s + v; ss = ss + v * v
        if v < mn then mn, imn = v, k end
        if v > mx then mx, imx = v, k end
      end
      if d == "u8" or d == "i32" or d == "i64" then assert.equals(s, x:sum(), what .. " sum")
      else assert.is_true(math.abs(s - x:sum()) <= 1e-9 * math.max(1, math.abs(s)), what .. " sum") end
      assert.is_true(math.abs(s / #fx - x:mean()) < 1e-9, what .. " mean")
      assert.equals(mn, x:min(), what .. " min"); assert.equals(mx, x:max(), what .. " max")
      assert.equals(imn, (x:argmin()), what .. " argmin"); assert.equals(imx, (x:argmax()), what .. " argmax")
      assert.is_true(math.abs(math.sqrt(ss) - x:norm()) < 1e-9 * math.max(1, ss), what .. " norm")
      if two then
        local cs, rs = {}, {}
        for i, rowv in ipairs(tx) do
          for j, v in ipairs(rowv) do cs[j] = (cs[j] or 0) + v; rs[i] = (rs[i] or 0) + v end
        end
        check_same(cs, x:sum(1), "f64", what .. " sum(1)")
        check_same(rs, x:sum(2), "f64", what .. " sum(2)")
      end

      -- in place through the view: the view changes, the rest of its
      -- parent does not (checked by a copy of the parent's other cells)
      local before = x:copy()
      x:add(y)
      check_same(map2(before:totable(), ty, function(a, b) return wrap(a + b, d) end), x, d, what .. " add in place")
      x:assign(before)
      check_same(before:totable(), x, d, what .. " assign back")

      -- through the wire
      local z = pd.codec.decode(pd.codec.encode(x))
      check_same(tx, z, d, what .. " codec")
    end
  end)

  it("keeps the rest of the parent intact when a view is updated", function()
    for case = 1, 50 do
      local r, c = g:integers(3, 6), g:integers(3, 6)
      local p = rand(r, c, "f64")
      local keep = p:totable()
      local i0, j0 = g:integers(1, r - 1), g:integers(1, c - 1)
      local b = p:block(i0, r, j0, c)
      b:scale(2)
      for i = 1, r do
        for j = 1, c do
          local want = (i >= i0 and j >= j0) and keep[i][j] * 2 or keep[i][j]
          assert.equals(want, p:get(i, j), ("case %d (%d,%d)"):format(case, i, j))
        end
      end
    end
  end)
end)
