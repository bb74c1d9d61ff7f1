-- The REPL, driven through a pseudo-terminal (tmux) as a person types:
-- line editing, expressions printed, multi-line chunks, errors that do not
-- end the session, persistent history, Ctrl-D.
local H = require "helper"
local q = H.q

-- One tmux server per run: named by our pid, since LuaJIT's math.random is
-- not seeded and two runs in one second would otherwise share a server.
local sock = "pdlua-spec-" .. tostring(require("pd.core.map").getpid())
local function tmux(words) return H.sh("tmux -L " .. sock .. " " .. words) end

local function screen(name)
  local out = tmux("capture-pane -p -J -S -200 -t " .. name)
  return out or ""
end

-- Wait until the pane shows a line equal to `line` (after `after` lines).
local function wait_line(name, line, seconds)
  return H.wait_until(function()
    for l in screen(name):gmatch("[^\n]*") do
      if l:gsub("%s+$", "") == line then return true end
    end
  end, seconds or 30)
end

-- Start the REPL in a new session; its exit status lands in `status` whole
-- (written to another name, then renamed), for H.wait_file.
local function start(name, hist, status)
  local cmd = "env PDLUA_HISTORY=" .. q(hist) .. " " .. q(H.pdlua) .. " repl; echo $? > " ..
              q(status .. ".part") .. " && mv " .. q(status .. ".part") .. " " .. q(status)
  local _, err, rc = tmux("new-session -d -s " .. name .. " -x 100 -y 40 " .. q(cmd))
  assert.equals(0, rc, err)
end

-- Type a line literally (tmux would read "end" as the End key), then Enter.
local function typeln(name, text)
  local _, err, rc = tmux("send-keys -t " .. name .. " -l " .. q(text))
  assert.equals(0, rc, err)
  _, err, rc = tmux("send-keys -t " .. name .. " Enter")
  assert.equals(0, rc, err)
end

local function keys(name, ...)
  local words = {}
  for i = 1, select("#", ...) do words[#words + 1] = q((select(i, ...))) end
  local _, err, rc = tmux("send-keys -t " .. name .. " " .. table.concat(words, " "))
  assert.equals(0, rc, err)
end

describe("pdlua REPL on a terminal", function()
  local hist = os.tmpname()
  local status = os.tmpname()

  setup(function() os.remove(hist); os.remove(status) end)
  teardown(function()
    tmux("kill-server")
    os.remove(hist); os.remove(status); os.remove(status .. ".part")
  end)

  it("prints expressions, waits for incomplete chunks, survives errors, exits on Ctrl-D", function()
    start("one", hist, status)
    assert.truthy(wait_line("one", ">", 30), "no prompt:\n" .. screen("one"))
    typeln("one", "1+1")
    assert.truthy(wait_line("one", "2"), screen("one"))

    typeln("one", "function f(x)")
    assert.truthy(wait_line("one", ">>", 30), "no continuation prompt:\n" .. screen("one"))
    typeln("one", "return x * 2"); typeln("one", "end"); typeln("one", "f(21)")
    assert.truthy(wait_line("one", "42"), screen("one"))

    typeln("one", "error('boom')")
    assert.truthy(H.wait_until(function() return screen("one"):find("boom", 1, true) end, 30))
    typeln("one", "{1, 2, x = 3}")
    assert.truthy(wait_line("one", "{1, 2, x = 3}"), screen("one"))
    typeln("one", "100 + 23")
    assert.truthy(wait_line("one", "123"), screen("one"))

    keys("one", "C-d")
    assert.equals("0\n", H.wait_file(status, 30), screen("one"))
    -- libedit writes its history file with octal escapes (\040 for space)
    local h = (H.read(hist) or ""):gsub("\\(%d%d%d)", function(o) return string.char(tonumber(o, 8)) end)
    assert.truthy(h:find("1+1", 1, true), "history: " .. h)
    assert.truthy(h:find("100 + 23", 1, true), "history: " .. h)
  end)

  it("recalls history from an earlier session with the up arrow", function()
    os.remove(status)
    start("two", hist, status)
    assert.truthy(wait_line("two", ">", 30), screen("two"))
    keys("two", "Up", "Enter")                    -- last line was 100 + 23
    assert.truthy(wait_line("two", "123"), screen("two"))
    keys("two", "C-d")
    assert.equals("0\n", H.wait_file(status, 30), screen("two"))
  end)
end)

describe("pdlua REPL on a pipe", function()
  it("evaluates lines and prints values", function()
    local out, err, rc = H.pdlua_run("repl", "1+1\nlocal t = {}\nfor i = 1, 3 do\n t[i] = i * i\nend\n")
    assert.equals(0, rc, err)
    assert.truthy(out:find("2\n", 1, true))
  end)
end)
