-- pd.codec (docs/wire.md): round trips of
-- every kind of value, identity, refusals that say where, and hostile input.
local pd = require "pd"
local codec = pd.codec
local H = require "helper"
-- The codec's test-only hooks and its test block type (ext 127): a module of
-- the test tree, not of pdlua (spec/c/codec_testhooks.c).  In package.loaded
-- like any library, so the closures that capture it travel by name.
local hooks = assert(package.loadlib(H.build .. "/spec/codec_testhooks.so",
                                     "luaopen_codec_testhooks"))()
package.loaded.codec_testhooks = hooks

local is54 = math.type ~= nil
local function rt(v, o) return codec.decode(codec.encode(v), o) end

-- pcall(f, ...) that must fail; returns the message.
local function fails(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local function where(f)
  local i = debug.getinfo(f, "S")
  return i.short_src .. ":" .. i.linedefined
end

describe("pd.codec round trips", function()
  it("keeps nil, booleans and strings as bytes", function()
    assert.is_nil(rt(nil))
    assert.equals(true, rt(true))
    assert.equals(false, rt(false))
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local s = table.concat(bytes) .. "\0tail"
    assert.equals(s, rt(s))
    assert.equals("", rt(""))
    assert.equals(("x"):rep(100000), rt(("x"):rep(100000)))
  end)

  it("keeps integers and floats apart (3.0 stays a float)", function()
    assert.equals(3.0, rt(3.0))
    assert.equals(-0.5, rt(-0.5))
    assert.equals(1 / 0, rt(1 / 0))
    assert.equals(-1 / 0, rt(-1 / 0))
    local nan = rt(0 / 0)
    assert.is_true(nan ~= nan)
    assert.equals("-0.0", string.format("%.1f", rt(-0.0)))
    assert.equals(1e308, rt(1e308))
    assert.equals(5e-324, rt(5e-324))
    if is54 then
      assert.equals("float", math.type(rt(3.0)))
      assert.equals("integer", math.type(rt(3)))
      for _, i in ipairs { 0, 1, -1, 63, 64, -64, -65, 2147483648, math.maxinteger, math.mininteger } do
        assert.equals(i, rt(i))
        assert.equals("integer", math.type(rt(i)))
      end
    end
  end)

  it("round-trips nested tables, holes and keys of every kind", function()
    local kt = {}
    local t = { 1, 2, nil, 4, a = { b = { c = "deep" } }, [1.5] = "f", [true] = "t",
                [kt] = "table key", [-7] = "neg", [""] = "empty" }
    local r = rt(t)
    assert.equals(1, r[1]); assert.equals(2, r[2]); assert.is_nil(r[3]); assert.equals(4, r[4])
    assert.equals("deep", r.a.b.c)
    assert.equals("f", r[1.5]); assert.equals("t", r[true]); assert.equals("neg", r[-7])
    assert.equals("empty", r[""])
    local n = 0
    for k, v in pairs(r) do
      if type(k) == "table" then n = n + 1; assert.equals("table key", v) end
    end
    assert.equals(1, n)
    assert.same({}, rt({}))
  end)

  it("keeps tables referenced twice as one table, and cycles", function()
    local shared = { x = 1 }
    local r = rt({ shared, shared, s = shared, [shared] = shared })
    assert.equals(r[1], r[2])
    assert.equals(r[1], r.s)
    assert.equals(r[1], r[r[1]])
    r[1].x = 2
    assert.equals(2, r.s.x)
    local c = {}
    c.self = c
    c[1] = { back = c }
    local rc = rt(c)
    assert.equals(rc, rc.self)
    assert.equals(rc, rc[1].back)
  end)

  it("packs tables of floats and of integers as blocks, with their hash part", function()
    local f, i = { name = "floats" }, { name = "ints" }
    for k = 1, 1000 do f[k] = k + 0.25; i[k] = k * 3 end
    local rf, ri = rt(f), rt(i)
    assert.equals(1000, #rf); assert.equals(1000, #ri)
    assert.equals(500.25, rf[500]); assert.equals(1500, ri[500])
    assert.equals("floats", rf.name); assert.equals("ints", ri.name)
    if is54 then
      assert.equals("float", math.type(rf[3]))
      assert.equals("integer", math.type(ri[3]))
      -- a block is 8 bytes a number: 1000 floats take about 8 KB
      assert.is_true(#codec.encode(f) < 8100)
      -- mixed subtypes fall back to per-value encoding and stay exact
      local m = { 1.5, 2, 3.0 }
      local rm = rt(m)
      assert.equals("float", math.type(rm[1])); assert.equals("integer", math.type(rm[2]))
      assert.equals("float", math.type(rm[3]))
    end
  end)

  it("round-trips metatables (by value, or by name for a library table)", function()
    local mt = { __index = function(_, k) return k .. "!" end }
    local o = rt(setmetatable({}, mt))
    assert.equals("hi!", o.hi)
    local s = rt(setmetatable({}, { __index = string }))
    assert.equals(string, getmetatable(s).__index)
  end)

  it("sends library values by name and resolves them again", function()
    assert.equals(math.sin, rt(math.sin))
    assert.equals(string.format, rt(string.format))
    assert.equals(string, rt(string))
    assert.equals(_G, rt(_G))
    assert.equals(print, rt(print))
    assert.equals(io.stdout, rt(io.stdout))
    local pretty = require "pd.pretty"
    assert.equals(pretty, rt(pretty))
    assert.equals("math.sin", hooks.name_of(math.sin))
    -- a library value costs its name, not its contents
    assert.is_true(#codec.encode(string) < 16)
  end)

  it("names a global C function as the global, whatever else also holds it", function()
    -- a compat module may alias a global (LuaJIT: table.unpack = unpack) on
    -- the sender only; the name must not depend on package.loaded's order
    for i = 1, 20 do package.loaded["pd_codec_spec_alias" .. i] = { p = print, t = tostring } end
    assert.equals("_G.print", hooks.name_of(print))
    assert.equals("_G.tostring", hooks.name_of(tostring))
    for i = 1, 20 do package.loaded["pd_codec_spec_alias" .. i] = nil end
  end)

  it("names a module required after an earlier encode", function()
    assert.is_table(codec.decode(codec.encode({ 1 })))      -- the name table is built
    package.loaded["pd_codec_spec_late"] = { f = function() return "late" end }
    local m = package.loaded["pd_codec_spec_late"]
    local msg = codec.encode({ m.f, m })
    assert.truthy(msg:find("pd_codec_spec_late", 1, true))
    local r = codec.decode(msg)
    assert.equals(m.f, r[1]); assert.equals(m, r[2])
    package.loaded["pd_codec_spec_late"] = nil
  end)

  it("loads on its own with require 'pd.codec'", function()
    local H = require "helper"
    local out, err, rc = H.pdlua_run("-e " .. H.q(
      "local c = require 'pd.codec' print(math.type and math.type(c.decode(c.encode(2.0))) or 'float')"))
    assert.equals(0, rc, err)
    assert.equals("float\n", out)
  end)

  it("round-trips functions with their upvalues", function()
    local k = 10
    local function add(x) return x + k end
    assert.equals(15, rt(add)(5))
    local f = rt(function(x) return math.floor(x) + #string.format("%d", 42) end)
    assert.equals(5, f(3.5))
  end)

  it("keeps closures that capture closures, and recursion", function()
    local base = 2
    local function sq(x) return x * x * base end
    local function sumsq(t) local s = 0 for _, v in ipairs(t) do s = s + sq(v) end return s end
    assert.equals(28, rt(sumsq)({ 1, 2, 3 }))
    local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
    assert.equals(120, rt(fact)(5))
  end)

  it("keeps one captured closure one closure for all that capture it", function()
    local calls = 0
    local function helper(x) calls = calls + 1; return x + 1 end
    local function f1(x) return helper(x) end
    local function f2(x) return helper(x) * 2 end
    local r = rt({ f1, f2 })
    local function up(fn, want)
      for i = 1, 255 do
        local n, v = debug.getupvalue(fn, i)
        if n == nil then return nil end
        if n == want then return v end
      end
    end
    local h1, h2 = up(r[1], "helper"), up(r[2], "helper")
    assert.is_function(h1)
    assert.equals(h1, h2)
    assert.equals(2, r[1](1)); assert.equals(4, r[2](1))
    assert.equals(2, up(h1, "calls"))   -- one counter behind both
    assert.equals(0, calls)
  end)

  it("keeps shared upvalues shared and functions referenced twice identical", function()
    local count = 0
    local function inc() count = count + 1; return count end
    local function get() return count end
    local r = rt({ inc = inc, get = get, again = inc })
    assert.equals(r.inc, r.again)
    r.inc(); r.inc()
    assert.equals(2, r.get())
    assert.equals(0, count)   -- a snapshot: the sender's state is untouched
  end)

  it("binds _ENV (globals) to the receiver's global table", function()
    -- load() gives the chunk the real global table (busted runs specs in its own)
    local f = rt(load("return function(v) PDLUA_CODEC_SPEC_G = v; return PDLUA_CODEC_SPEC_G end")())
    assert.equals(7, f(7))
    assert.equals(7, rawget(_G, "PDLUA_CODEC_SPEC_G"))
    _G.PDLUA_CODEC_SPEC_G = nil
  end)

  it("keeps state captured in tables and strips debug info on request", function()
    local cfg = { scale = 3, list = { 1, 2 } }
    local function g(x) return x * cfg.scale + #cfg.list end
    assert.equals(11, rt(g)(3))
    local full, stripped = codec.encode(g), codec.encode(g, { strip = true })
    if is54 then assert.is_true(#stripped < #full) end   -- LuaJIT's lua_dump cannot strip
    assert.equals(11, codec.decode(stripped)(3))
  end)

  it("round-trips extension userdata (the test block, ext 127) with identity", function()
    local b = hooks.block({ 1.5, 2.5, 3.5 })
    local r = rt({ b, b })
    assert.equals(3, #r[1])
    assert.equals(2.5, r[1][2])
    assert.equals(r[1], r[2])
  end)
end)

describe("pd.codec refusals name where the bad value sits", function()
  it("refuses a coroutine in an upvalue", function()
    local co = coroutine.create(function() end)
    local function sim() return co end
    assert.equals("pd.codec: upvalue 1 'co' of function at " .. where(sim) .. " is a coroutine",
                  fails(codec.encode, sim))
  end)

  it("refuses a coroutine inside a table, naming the path", function()
    local co = coroutine.create(function() end)
    assert.equals("pd.codec: value.a.b[2] is a coroutine",
                  fails(codec.encode, { a = { b = { 1, co } } }))
    local cfg = { co = co }
    local function h() return cfg end
    assert.equals("pd.codec: field .co of upvalue 1 'cfg' of function at " .. where(h)
                  .. " is a coroutine", fails(codec.encode, h))
  end)

  it("names a bad key as a key", function()
    local co = coroutine.create(function() end)
    assert.equals("pd.codec: value.t[<key>] is a coroutine", fails(codec.encode, { t = { [co] = 1 } }))
  end)

  it("has a non-raising variant", function()
    local v, err = codec.safe.decode("\1\99")
    assert.is_nil(v)
    assert.equals("pd.codec: malformed message: unknown tag at byte 1", err)
    v, err = codec.safe.encode({ coroutine.create(print) })
    assert.is_nil(v)
    assert.equals("pd.codec: value[1] is a coroutine", err)
    assert.equals(7, codec.safe.decode(codec.safe.encode(7)))
  end)

  it("refuses light userdata and foreign userdata", function()
    assert.equals("pd.codec: value.p is a light userdata",
                  fails(codec.encode, { p = hooks.light() }))
    local f = io.tmpfile()
    if is54 then
      assert.equals("pd.codec: value[1] is a userdata of type 'FILE*' that has no codec extension",
                    fails(codec.encode, { f }))
    else   -- LuaJIT's metatables carry no __name
      assert.equals("pd.codec: value[1] is a foreign userdata (no codec extension)",
                    fails(codec.encode, { f }))
    end
    f:close()
  end)

  it("refuses a C function that no module exposes", function()
    local it = ("abc"):gmatch(".")
    local function uses() return it end
    assert.equals("pd.codec: upvalue 1 'it' of function at " .. where(uses)
                  .. " is a C function that no module exposes", fails(codec.encode, uses))
  end)

  it("refuses nesting beyond the depth limit, both ways", function()
    local t = {}
    for _ = 1, 250 do t = { t } end
    assert.matches("is nested deeper than 200 levels$", fails(codec.encode, t))
    local ok = pcall(codec.encode, t, { max_depth = 300 })
    assert.is_true(ok)
    local msg = codec.encode(t, { max_depth = 300 })
    assert.matches("nested deeper than 200 levels at byte", fails(codec.decode, msg))
    assert.equals(t[1] ~= nil, codec.decode(msg, { max_depth = 300 })[1] ~= nil)
  end)

  it("refuses bytecode and metatables from an untrusted peer", function()
    local k = 1
    local msg = codec.encode(function() return k end)
    assert.equals("pd.codec: malformed message: function (bytecode) from a peer not trusted "
                  .. "with bytecode at byte 1", fails(codec.decode, msg, { bytecode = false }))
    assert.matches("metatable from a peer not trusted with code",
                   fails(codec.decode, codec.encode(setmetatable({}, {})), { bytecode = false }))
    -- data and library names still decode text-only
    assert.equals(math.sin, codec.decode(codec.encode(math.sin), { bytecode = false }))
  end)

  it("refuses bytecode from another VM (fingerprint)", function()
    local msg = codec.encode(function() return 1 end)
    assert.equals("\11", msg:sub(2, 2))    -- FUNC tag, then the fingerprint
    local other = msg:sub(1, 2) .. string.char((msg:byte(3) + 1) % 256) .. msg:sub(4)
    assert.matches("function from a different VM", fails(codec.decode, other))
    assert.matches("^%x+$", codec.fingerprint())
    assert.equals(16, #codec.fingerprint())
  end)
end)

describe("pd.codec decoder on hostile input", function()
  local function varint(n)
    local t = {}
    repeat
      local b = n % 128
      n = (n - b) / 128
      t[#t + 1] = string.char(b + (n > 0 and 128 or 0))
    until n == 0
    return table.concat(t)
  end
  local u32max = "\255\255\255\255"

  local cases = {
    { "",                                 "truncated message at byte 0" },
    { "\1",                               "truncated message at byte 0" },
    { "\2\0",                             "unknown format version 2 at byte 0" },
    { "\1\0\0",                           "trailing bytes after the value at byte 2" },
    { "\1\99",                            "unknown tag at byte 1" },
    { "\1\5\10abc",                       "string longer than the message at byte 3" },
    { "\1\5" .. varint(2 ^ 40) .. "x",    "string longer than the message" },
    { "\1\3" .. ("\255"):rep(11),         "bad or truncated varint" },
    { "\1\4\0\0\0",                       "truncated float" },
    { "\1\6" .. u32max,                   "table claims more elements than the message holds" },
    { "\1\8" .. u32max .. "\0\0",         "table claims more elements than the message holds" },
    { "\1\6\0\0\0\0" .. u32max,           "table claims more keys than the message holds" },
    { "\1\6\1\0\0\0",                     "table claims more elements than the message holds" },
    { "\1\6\1\0\0\0\0",                   "truncated length at byte 7" },
    { "\1\6\0\0\0\0\1\0\0\0\0\2",         "nil table key" },
    { "\1\6\0\0\0\0\1\0\0\0\4\0\0\0\0\0\0\248\127\2", "NaN table key" },
    { "\1\10\5",                          "reference to an unknown value" },
    { "\1\10\0",                          "reference to an unknown value" },
    { "\1\12\1\1",                        "upvalue join outside a function at byte 1" },
    { "\1\14\0\0",                        "bad library name" },
    { "\1\15\127\9\0\0\0",                "extension payload longer than the message" },
    { "\1\15\127\3\0\0\0\1\2\3",          "malformed block payload" },
    { "\1\15\99\0\0\0\0",                 "extension type 99 that is not registered here" },
    -- ext 1 is pd.Array, loaded with require "pd": an empty payload is malformed
    { "\1\15\1\0\0\0\0",                  "malformed pd.Array payload (array: truncated header)" },
    { "\1\7\0\0\0\0\0\0\0\0\3\2",         "metatable is not a table" },
    { "\1\14\8nosuchmd\0",                "module 'nosuchmd' named in the message is not" },
    { "\1\14\4math\7nothere",             "library value 'math.nothere' does not exist here" },
  }
  for _, c in ipairs(cases) do
    it(("rejects %q"):format(c[1]:sub(1, 24)), function()
      local err = fails(codec.decode, c[1])
      assert.truthy(err:find("pd.codec: ", 1, true), err)
      assert.truthy(err:find(c[2], 1, true), err .. "\n  wanted: " .. c[2])
    end)
  end

  it("refuses messages over the size limit before reading them", function()
    assert.equals("pd.codec: message of 1001 bytes exceeds the limit of 1000",
                  fails(codec.decode, "\1\5" .. varint(997) .. ("x"):rep(997),
                        { max_size = 1000 }))
  end)

  it("refuses deep nesting without recursion", function()
    local msg = "\1" .. ("\6\1\0\0\0"):rep(100000)
    assert.matches("nested deeper than 200 levels at byte 1006", fails(codec.decode, msg))
  end)

  it("raises a codec error for every truncation of a rich message", function()
    local shared = { 1, 2 }
    local k = 3
    local v = { shared, shared, f = function(x) return x + k end, s = "str", fl = { 1.5, 2.5 },
                n = math.sin, b = hooks.block({ 1, 2 }), [true] = { nested = { deeper = {} } } }
    local msg = codec.encode(v)
    for n = 0, #msg - 1 do
      local ok, err = pcall(codec.decode, msg:sub(1, n))
      assert.is_false(ok)
      assert.truthy(tostring(err):find("^pd%.codec: "), tostring(err))
    end
    assert.equals("str", codec.decode(msg).s)
  end)

  it("raises a codec error or decodes for random and mutated bytes", function()
    math.randomseed(42)
    local base = codec.encode({ 1, "two", { three = 3.0 }, { 1.5, 2.5 }, math.sin })
    for i = 1, 3000 do
      local s
      if i % 2 == 0 then
        local t = {}
        for j = 1, math.random(1, 40) do t[j] = string.char(math.random(0, 255)) end
        s = "\1" .. table.concat(t)
      else
        local p = math.random(2, #base)
        s = base:sub(1, p - 1) .. string.char(math.random(0, 255)) .. base:sub(p + 1)
      end
      local ok, err = pcall(codec.decode, s, { bytecode = false, require = false })
      if not ok then assert.truthy(tostring(err):find("^pd%.codec: "), tostring(err)) end
    end
  end)
end)
