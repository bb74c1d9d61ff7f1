-- The pdlua command line (docs/reference.md, "Command line"): run, -e, flags, arg,
-- exit status and error reports.
local H = require "helper"
local q = H.q

describe("pdlua command", function()
  it("prints its version and the VM it embeds", function()
    local out, _, rc = H.pdlua_run("--version")
    assert.equals(0, rc)
    assert.matches("^pdlua %d+%.%d+%.%d+ %(.*Lua.*%)\n$", out)
  end)

  it("prints help with the subcommands", function()
    local out, _, rc = H.pdlua_run("--help")
    assert.equals(0, rc)
    for _, w in ipairs { "run", "serve", "nodes", "ctl", "repl", "--cpus" } do
      assert.truthy(out:find(w, 1, true), w)
    end
  end)

  it("runs a script with arg and ... set as lua does", function()
    local s = H.tmpfile("print(arg[0] ~= nil, arg[1], arg[2], #arg, ...)\n", ".lua")
    local out, err, rc = H.pdlua_run("run " .. q(s) .. " a b")
    assert.equals(0, rc, err)
    assert.equals("true\ta\tb\t2\ta\tb\n", out)
    out = H.pdlua_run(q(s) .. " x")                   -- no 'run' word
    assert.equals("true\tx\tnil\t1\tx\n", out)
    os.remove(s)
  end)

  it("takes its flags before or after the script, and none after --", function()
    local s = H.tmpfile([[
      local o = require("pd").options()
      print(o.cpus, o.seed, o.progress, o.json, table.concat(o.nodes or {}, "|"), ...)
    ]], ".lua")
    local out, err, rc = H.pdlua_run("run --cpus 3 " .. q(s) .. " a --seed=7 --no-progress --json"
                                     .. " --nodes u1,u2 b -- --cpus 9")
    assert.equals(0, rc, err)
    assert.equals("3\t7\tfalse\ttrue\tu1|u2\ta\tb\t--cpus\t9\n", out)
    os.remove(s)
  end)

  it("rejects a malformed count with status 2 and one line", function()
    local _, err, rc = H.pdlua_run("run --cpus lots x.lua")
    assert.equals(2, rc)
    assert.matches("^pdlua: %-%-cpus wants a whole number", err)
    -- serve and ctl refuse counts past what a node may lend, before any connection
    _, err, rc = H.pdlua_run("serve --cpus 1e12")
    assert.equals(2, rc)
    assert.matches("%-%-cpus wants a whole number >= 0, got '1e12'", err)
    _, err, rc = H.pdlua_run("ctl --node tcp://127.0.0.1:1 set --cpus 3000000000")
    assert.equals(1, rc)
    assert.matches("%-%-cpus wants a whole number >= 0, got '3000000000'", err)
  end)

  it("rejects an unknown option", function()
    local _, err, rc = H.pdlua_run("--frobnicate")
    assert.equals(2, rc)
    assert.matches("unknown option '%-%-frobnicate'", err)
  end)

  it("runs -e chunks in order", function()
    local out, _, rc = H.pdlua_run("-e 'x = 20' -e 'print(x + 22)'")
    assert.equals(0, rc)
    assert.equals("42\n", out)
  end)

  it("runs a script from stdin", function()
    local out, _, rc = H.pdlua_run("-", "print('from stdin')")
    assert.equals(0, rc)
    assert.equals("from stdin\n", out)
  end)

  it("reports an error with its place and a traceback, status 1", function()
    local s = H.tmpfile("local function f() error('boom') end\nf()\n", ".lua")
    local _, err, rc = H.pdlua_run("run " .. q(s))
    assert.equals(1, rc)
    local first = err:match("^[^\n]*")
    assert.matches("^pdlua: .*:1: boom$", first)
    assert.truthy(err:find("stack traceback:", 1, true))
    os.remove(s)
  end)

  it("reports error objects that are not strings", function()
    local _, err, rc = H.pdlua_run("-e 'error(setmetatable({}, {__tostring = function() return \"custom!\" end}))'")
    assert.equals(1, rc)
    assert.matches("^pdlua: custom!", err)
    _, err, rc = H.pdlua_run("-e 'error({})'")
    assert.equals(1, rc)
    assert.matches("^pdlua: %(error object is a table value%)", err)
  end)

  it("reports a syntax error and a missing script", function()
    local s = H.tmpfile("x = = 1\n", ".lua")
    local _, err, rc = H.pdlua_run("run " .. q(s))
    assert.equals(1, rc)
    assert.matches("^pdlua: .*unexpected symbol", err)
    os.remove(s)
    _, err, rc = H.pdlua_run("run /nonexistent/job.lua")
    assert.equals(1, rc)
    assert.matches("cannot open /nonexistent/job.lua", err)
  end)

  it("passes os.exit status through", function()
    local _, _, rc = H.pdlua_run("-e 'os.exit(3)'")
    assert.equals(3, rc)
  end)

  it("answers a usage error with status 2 for serve, nodes and ctl", function()
    -- (the commands themselves: spec/nodes_cluster_spec.lua)
    for c, msg in pairs { ["serve --bogus"] = "unknown option", ["nodes --bogus"] = "unknown argument",
                          ["ctl"] = "usage: pdlua ctl" } do
      local _, err, rc = H.pdlua_run(c)
      assert.equals(2, rc, c)
      assert.matches(msg, err)
    end
  end)

  it("finds require 'pd' from any working directory, with no environment", function()
    local out, err, rc = H.sh("cd / && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 "
      .. q(H.build .. "/pdlua") .. " -e 'print(require(\"pd\").version)'")
    assert.equals(0, rc, err)
    assert.matches("^%d+%.%d+%.%d+\n$", out)
  end)

  it("prints LUA_PATH and LUA_CPATH that let plain Lua require 'pd'", function()
    if require("pd.core").sanitized then
      pending("a sanitizer build's core.so cannot load into an uninstrumented lua5.4")
      return
    end
    local paths, _, rc = H.pdlua_run("--paths")
    assert.equals(0, rc)
    local vm = require("pd").vm:match("LuaJIT") and "luajit" or "lua5.4"
    local out, err, rc2 = H.sh("cd / && " .. paths:gsub("\n", "; ") ..
      vm .. " -e 'local pd = require \"pd\"; print(pd.version, pd.vm)'")
    assert.equals(0, rc2, err)
    assert.matches("^%d+%.%d+%.%d+\t", out)
  end)
end)
