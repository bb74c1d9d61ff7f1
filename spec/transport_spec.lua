-- Code transport (pd.codec.bundle / sender / receiver; docs/reference.md):
-- the job script and its local pure-Lua modules travel as source, named by
-- SHA-256, once per receiver; the receiver is a separate pdlua process with
-- a fresh Lua state, started in another directory so that nothing but the
-- message can give it the job's modules.
local H = require "helper"
local q = H.q

local function mkdir_tmp()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. q(d)))
  return d
end

local function write(path, text)
  local f = assert(io.open(path, "wb")); f:write(text); f:close()
end

local function read(path)
  local f = assert(io.open(path, "rb")); local s = f:read("*a"); f:close(); return s
end

-- The job: sim.lua uses a local module `helper` (which requires a second
-- local module `consts`) from a shipped closure.
local HELPER = [[
local consts = require "consts"
local M = {}
function M.square(x) return x * x * consts.one end
return M
]]
local CONSTS = "return { one = 1, name = 'consts-module' }\n"
local SIM = [[
local pd = require "pd"
local helper = require "helper"
local k = tonumber(arg[1] or "3")
local function f(x) return helper.square(x) + k end
local b = pd.codec.bundle(arg[0])
local s = pd.codec.sender(b)
local function save(name, v)
  local h = assert(io.open(name, "wb")); h:write(v); h:close()
end
save("msg1", s:encode(f))
save("msg2", s:encode(f))
save("msg3", s:encode(helper.square))
local n = 0
for _ in pairs(b.modules) do n = n + 1 end
print(n, b.entry.path, b.modules.helper.sha)
]]

-- The receiver: decodes the files named on its command line in order and
-- calls the last value with 4.
local RECV = [[
local pd = require "pd"
local dir, bytecode = arg[1], arg[2] == "bytecode"
local r = pd.codec.receiver{ dir = dir ~= "-" and dir or nil, bytecode = bytecode }
local v
for i = 3, #arg do v = r:decode(assert(io.open(arg[i], "rb")):read("*a")) end
print(v(4), package.loaded.consts and package.loaded.consts.name, r.entry and r.entry.path)
]]

describe("code transport", function()
  local job, away, recv
  setup(function()
    job = mkdir_tmp()
    away = mkdir_tmp()
    write(job .. "/helper.lua", HELPER)
    write(job .. "/consts.lua", CONSTS)
    write(job .. "/sim.lua", SIM)
    recv = away .. "/recv.lua"
    write(recv, RECV)
    local out, err, rc = H.sh("cd " .. q(job) .. " && " .. q(H.pdlua) .. " run sim.lua 3")
    assert.equals(0, rc, err)
    assert.matches("^2\tsim.lua\t%x+\n$", out)
  end)
  teardown(function()
    os.execute("rm -rf " .. q(job) .. " " .. q(away))
  end)

  local function receive(args)
    return H.sh("cd " .. q(away) .. " && " .. q(H.pdlua) .. " run recv.lua " .. args)
  end

  it("resolves a shipped function's local modules on a fresh receiver", function()
    local out, err, rc = receive("- bytecode " .. q(job .. "/msg1"))
    assert.equals(0, rc, err)
    assert.equals("19\tconsts-module\tsim.lua\n", out)   -- 4*4*1 + 3
  end)

  it("sends each source once per receiver: the second message carries hashes only", function()
    local m1, m2 = read(job .. "/msg1"), read(job .. "/msg2")
    assert.truthy(m1:find("consts-module", 1, true))
    assert.truthy(m1:find("function M.square", 1, true))
    assert.is_nil(m2:find("consts-module", 1, true))
    assert.is_nil(m2:find("function M.square", 1, true))
    assert.is_true(#m2 < #m1 - #HELPER - #CONSTS)
    -- the same receiver decodes both
    local out, err, rc = receive("- bytecode " .. q(job .. "/msg1") .. " " .. q(job .. "/msg2"))
    assert.equals(0, rc, err)
    assert.equals("19\tconsts-module\tsim.lua\n", out)
  end)

  it("a receiver that lacks a hash says so, and its disk cache fills the gap", function()
    local _, err, rc = receive("- bytecode " .. q(job .. "/msg2"))
    assert.is_not.equals(0, rc)
    assert.matches("pd.codec: module '%w+' %(source %x+%) is not in this receiver's cache", err)
    local cache = away .. "/cache"
    assert(os.execute("mkdir -p " .. q(cache)))
    local _, err1, rc1 = receive(q(cache) .. " bytecode " .. q(job .. "/msg1"))
    assert.equals(0, rc1, err1)
    local out, err2, rc2 = receive(q(cache) .. " bytecode " .. q(job .. "/msg2"))  -- new process
    assert.equals(0, rc2, err2)
    assert.equals("19\tconsts-module\tsim.lua\n", out)
  end)

  it("loads module functions by name with text-only loading (no bytecode)", function()
    -- msg3 carries helper.square by name: no bytecode crosses
    local out, err, rc = receive("- text " .. q(job .. "/msg1") .. " " .. q(job .. "/msg3"))
    assert.is_not.equals(0, rc)   -- msg1 holds a closure: refused without bytecode
    assert.matches("not trusted with bytecode", err)
    out, err, rc = H.sh("cd " .. q(away) .. " && " .. q(H.pdlua) .. " -e " .. q([[
      local pd = require "pd"
      local r = pd.codec.receiver{}
      local s = assert(io.open(]] .. ("%q"):format(job .. "/msg3") .. [[, "rb")):read("*a")
      -- msg3 came after msg1 from the same sender: it holds hashes only
      local ok, e = pcall(r.decode, r, s)
      print(ok, e)]]))
    assert.equals(0, rc, err)
    assert.matches("^false\tpd.codec: module '%w+' %(source %x+%) is not in this receiver's cache", out)
  end)

  it("fails at once, naming it, when a value needs a local C module", function()
    write(job .. "/fastc.so", "not really a shared object")
    write(job .. "/cjob.lua", [[
      local pd = require "pd"
      package.loaded.fastc = { dot = function(a, b) return a * b end }   -- as if loaded from fastc.so
      local fastc = require "fastc"
      local s = pd.codec.sender(pd.codec.bundle(arg[0]))
      local ok, e = pcall(s.encode, s, function(x) return fastc.dot(x, x) end)
      print(ok, e)
      print((pcall(s.encode, s, { plain = 1 })))
    ]])
    local out, err, rc = H.sh("cd " .. q(job) .. " && " .. q(H.pdlua) .. " run cjob.lua")
    assert.equals(0, rc, err)
    local first, second = out:match("^([^\n]*)\n([^\n]*)\n$")
    assert.matches("^false\tpd.codec: module 'fastc' is a C module %(.*fastc%.so%) and cannot be shipped", first)
    assert.equals("true", second)
  end)

  it("a receiver without a module named in the message fails with the module's name", function()
    local out, err, rc = H.sh(q(H.pdlua) .. " -e " .. q([[
      local pd = require "pd"
      package.loaded.nosuchmod = { f = function() end }
      local s = pd.codec.sender(pd.codec.bundle(nil, { root = "/nonexistent" }))
      local msg = s:encode({ m = package.loaded.nosuchmod })
      package.loaded.nosuchmod = nil
      print(pcall(pd.codec.receiver{}.decode, pd.codec.receiver{}, msg))]]))
    assert.equals(0, rc, err)
    assert.matches("^false\tpd.codec: module 'nosuchmod' named in the message is not available here", out)
  end)

  it("rejects a shipped source that does not match its hash", function()
    local m1 = read(job .. "/msg1")
    local bad = m1:gsub("consts%-module", "consts-MODULE")
    local path = away .. "/bad"
    write(path, bad)
    local _, err, rc = receive("- bytecode " .. q(path))
    assert.is_not.equals(0, rc)
    assert.matches("pd.codec: malformed bundle message: source does not match its hash", err)
  end)
end)
