-- pd.random and pd.rng() (docs/arrays.md, "Random numbers"): the Philox4x64-10 stream is
-- the published one, streams are reproducible and distinct, and the
-- distributions have the moments and tails they should.  Seeds are fixed,
-- so every statistic below is one deterministic number; the bounds are
-- about 5 standard errors wide.
local pd = require "pd"
local luajit = pd.vm:find("LuaJIT") ~= nil

describe("pd.random", function()
  it("is Philox4x64-10: the Random123 known-answer vector for key 0, counter 0", function()
    if luajit then return end                   -- 64-bit integers need Lua 5.4
    local g = pd.random.new(0, 0)
    local got = {}
    for i = 1, 4 do got[i] = ("%016x"):format(g:bits()) end
    assert.same({ "16554d9eca36314c", "db20fe9d672d0fdc", "d7e772cee186176b", "7e68b68aec7ba23b" }, got)
  end)

  it("gives the same numbers for the same (seed, stream), different ones otherwise", function()
    local a, b = pd.random.new(42, 3), pd.random.stream(42, 3)
    local c, d = pd.random.new(42, 4), pd.random.new(43, 3)
    local x = a:uniform(0, 1, 100)
    assert.same(x:totable(), b:uniform(0, 1, 100):totable())
    assert.are_not.same(x:totable(), c:uniform(0, 1, 100):totable())
    assert.are_not.same(x:totable(), d:uniform(0, 1, 100):totable())
    -- the drawing functions share one stream: scalar draws continue it
    local e, f = pd.random.new(5), pd.random.new(5)
    local s = { e:uniform(), e:uniform(), e:uniform() }
    assert.same(s, f:uniform(0, 1, 3):totable())
  end)

  it("saves and restores its state exactly", function()
    local g = pd.random.new(9, 2)
    g:normal(0, 1, 7)
    local st = g:state()
    local h = pd.random.from_state(st)
    assert.same(g:uniform(0, 1, 10):totable(), h:uniform(0, 1, 10):totable())
    for k = 0, 17 do                            -- every position within a block pair
      local a = pd.random.new(3, 1)
      if k > 0 then a:uniform(0, 1, k) end
      local b = pd.random.from_state(a:state())
      assert.same(a:uniform(0, 1, 9):totable(), b:uniform(0, 1, 9):totable())
    end
  end)

  it("draws uniforms in [lo, hi) with the right mean and variance", function()
    local g = pd.random.new(1)
    local n = 200000
    local u = g:uniform(0, 1, n)
    assert.is_true(u:min() >= 0 and u:max() < 1)
    assert.is_true(math.abs(u:mean() - 0.5) < 5 * math.sqrt(1 / 12 / n))
    assert.is_true(math.abs(((u - 0.5) ^ 2):mean() - 1 / 12) < 0.002)
    local v = g:uniform(-3, -2, 10, 4)
    assert.equals(10, (v:shape()))
    assert.is_true(v:min() >= -3 and v:max() < -2)
    local x = g:uniform(2, 5)
    assert.is_true(x >= 2 and x < 5)
  end)

  it("draws normals (ziggurat) with the moments and tails of N(0, 1)", function()
    local g = pd.random.new(2024)
    local n = 1000000
    local z = g:normal(0, 1, n)
    local m = z:mean()
    local var = ((z - m) ^ 2):mean()
    local kurt = ((z - m) ^ 4):mean() / var ^ 2
    assert.is_true(math.abs(m) < 5 / math.sqrt(n), m)
    assert.is_true(math.abs(var - 1) < 5 * math.sqrt(2 / n), var)
    assert.is_true(math.abs(kurt - 3) < 5 * math.sqrt(24 / n), kurt)
    -- P(z < 1) = 0.841345; P(|z| > 3) = 0.0026998; P(z > 3.6541528853610088),
    -- the ziggurat's tail region, = 1.2895e-4
    local below1 = (pd.math.sign(1 - z) + 1):sum() / 2 / n
    assert.is_true(math.abs(below1 - 0.841345) < 5 * math.sqrt(0.841345 * 0.158655 / n), below1)
    local a = pd.math.abs(z)
    local over3 = (pd.math.sign(a - 3) + 1):sum() / 2 / n
    assert.is_true(math.abs(over3 - 0.0026998) < 5 * math.sqrt(0.0027 / n), over3)
    local tail = (pd.math.sign(z - 3.6541528853610088) + 1):sum() / 2
    assert.is_true(math.abs(tail - 128.95) < 5 * math.sqrt(128.95), tail)
    local y = g:normal(10, 0.5, 1000, 2)
    assert.is_true(math.abs(y:mean() - 10) < 0.1)
  end)

  it("fills an existing array in place, views included", function()
    local g = pd.random.new(3)
    local m = pd.zeros(4, 3)
    local c2 = m:col(2)
    assert.equals(c2, g:normal(0, 1, c2))
    assert.equals(0, m:col(1):norm() + m:col(3):norm())
    assert.is_true(m:col(2):norm() > 0)
    g:uniform(5, 6, m:row(1))
    assert.is_true(m:row(1):min() >= 5)
    assert.error_matches(function() g:normal(0, 1, pd.zeros(2, "i32")) end, "cannot take")
  end)

  it("refuses a negative or NaN standard deviation, naming the argument", function()
    local g = pd.random.new(1)
    for _, args in ipairs { { 0, -1 }, { 0, -1, 3 }, { 0, 0 / 0, 3 } } do
      assert.error_matches(function() g:normal((table.unpack or unpack)(args)) end,
                           "#2 to 'normal' %(the standard deviation must be >= 0%)")
    end
    assert.equals(5, g:normal(5, 0))
  end)

  it("draws integers in [lo, hi] inclusive, every value about equally often", function()
    local g = pd.random.new(11)
    local k = g:integers(1, 6, 60000)
    assert.equals("i64", k:dtype())
    assert.equals(1, k:min()); assert.equals(6, k:max())
    local counts = {}
    for i = 1, #k do local v = k[i]; counts[v] = (counts[v] or 0) + 1 end
    for v = 1, 6 do assert.is_true(math.abs(counts[v] - 10000) < 5 * math.sqrt(10000 * 5 / 6), v) end
    assert.equals(7, g:integers(7, 7))
    local x = g:integers(-5, 5)
    assert.is_true(x >= -5 and x <= 5 and x == math.floor(x))
    assert.error_matches(function() g:integers(3, 2) end, "empty interval")
    local p = g:permutation(10)
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, p:sort():totable())
  end)

  it("pd.rng() is the task's stream (seed, index), and stream 0 outside tasks", function()
    local R = require "pd.random"
    R.set_task(nil)
    local x = pd.rng():uniform()
    assert.equals(pd.random.stream(tonumber(pd.options().seed) or 0, 0):uniform(), x)
    R.set_task(77, 5)
    local g = pd.rng()
    assert.equals(g, pd.rng())                  -- one generator per task
    assert.equals(pd.random.stream(77, 5):normal(), g:normal())
    R.set_task(77, 6)
    assert.are_not.equal(g, pd.rng())
    R.set_task(nil)
  end)
end)
