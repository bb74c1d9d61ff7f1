-- pd.Array through pd.codec (codec extension 1): arrays of every dtype and
-- shape round-trip as a header plus raw bytes, views travel as what they
-- show, identity within one message is kept, and a damaged payload is an
-- error rather than a crash.
local pd = require "pd"
local A = require "pd.core.array"

describe("pd.Array through pd.codec", function()
  it("round-trips every dtype, 1-D and 2-D, inside tables", function()
    for _, d in ipairs { "f64", "f32", "i32", "i64", "u8" } do
      local a = pd.array({ { 1, 2, 3 }, { 4, 5, 255 } }, d)
      local t = pd.codec.decode(pd.codec.encode { x = a, v = a:row(2), list = { pd.range(3, d) } })
      assert.is_true(pd.isarray(t.x))
      assert.equals(d, t.x:dtype())
      assert.same(a:totable(), t.x:totable())
      assert.same({ 4, 5, 255 }, t.v:totable())
      assert.same({ 1, 2, 3 }, t.list[1]:totable())
      assert.is_false(t.x:isview())
    end
  end)

  it("carries the elements raw: the payload is the array's wire form, in one piece", function()
    local a = pd.linspace(0, 1, 1000)
    local s = pd.codec.encode(a)
    local payload = A.encode(a)
    assert.truthy(s:find(payload, 1, true))
    assert.is_true(#s - #payload < 16)           -- a few bytes of framing only
    local b = pd.codec.decode(s)
    assert.equals(0, (b - a):norm())
  end)

  it("sends a view as the elements it shows (T, col, slice)", function()
    local m = pd.range(12):reshape(3, 4)
    local t = pd.codec.decode(pd.codec.encode { m:T(), m:col(3), m:slice(2, 3) })
    assert.same(m:T():totable(), t[1]:totable())
    assert.same({ 3, 7, 11 }, t[2]:totable())
    assert.same({ { 5, 6, 7, 8 }, { 9, 10, 11, 12 } }, t[3]:totable())
  end)

  it("keeps identity: one array twice in a message decodes to one array", function()
    local a = pd.ones(4)
    local t = pd.codec.decode(pd.codec.encode { a, a, b = a })
    assert.equals(t[1], t[2]); assert.equals(t[1], t.b)
    t[1][1] = 9
    assert.equals(9, t.b[1])
  end)

  it("round-trips empty arrays", function()
    local t = pd.codec.decode(pd.codec.encode { pd.zeros(0), pd.zeros(0, 3, "i32") })
    assert.equals(0, #t[1])
    local r, c = t[2]:shape()
    assert.equals(0, r); assert.equals(3, c); assert.equals("i32", t[2]:dtype())
  end)

  it("refuses a damaged payload with an error", function()
    local a = pd.array { 1, 2, 3 }
    local s = pd.codec.encode(a)
    local payload = A.encode(a)
    local at = s:find(payload, 1, true)
    local function patch(i, byte) return s:sub(1, at + i - 2) .. byte .. s:sub(at + i) end
    assert.error_matches(function() pd.codec.decode(patch(1, "\9")) end, "pd.codec: malformed pd.Array payload %(array: unknown dtype%)")
    assert.error_matches(function() pd.codec.decode(patch(2, "\3")) end, "ndim must be 1 or 2")
    assert.error_matches(function() pd.codec.decode(patch(3, "\4")) end, "do not match the shape")
  end)
end)
