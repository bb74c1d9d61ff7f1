--- spec/helper.lua: what specs share.  Never sleeps and hopes: waits for a
-- condition with a deadline.
local H = {}

H.build = os.getenv("PDLUA_BUILD") or "build"
H.source = os.getenv("PDLUA_SOURCE") or "."
H.pdlua = H.build .. "/pdlua"

--- Quote a word for /bin/sh.
function H.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- Run a shell command; returns stdout, stderr, exit status (a number).
-- stdin is empty unless `input` is given.
function H.sh(cmd, input)
  local tmp = os.tmpname()
  local inf = os.tmpname()
  local f = assert(io.open(inf, "wb")); f:write(input or ""); f:close()
  local p = assert(io.popen("(" .. cmd .. ") <" .. H.q(inf) .. " 2>" .. H.q(tmp) .. "; echo \"::$?\""))
  local out = p:read("a") or p:read("*a")
  p:close()
  local ef = assert(io.open(tmp, "rb"))
  local err = ef:read("*a"); ef:close()
  os.remove(tmp); os.remove(inf)
  local body, rc = out:match("^(.*)::(%d+)\n$")
  return body, err, tonumber(rc)
end

--- Run build/pdlua with the given words (already quoted as needed).
function H.pdlua_run(words, input) return H.sh(H.q(H.pdlua) .. " " .. words, input) end

--- Write text to a new temporary file and return its path.
function H.tmpfile(text, suffix)
  local base = os.tmpname()                  -- Lua 5.4 creates this file
  local name = base .. (suffix or "")
  if suffix then os.remove(base) end         -- only `name` is the caller's to remove
  local f = assert(io.open(name, "wb")); f:write(text); f:close()
  return name
end

--- Monotonic-enough clock for deadlines.
local ok, core = pcall(require, "pd.core")
H.now = ok and core.now or os.time

--- Wait until fn() returns a true value or `seconds` pass; returns its value
-- or nil, "timeout".  Polls with a short blocking pause (not a busy loop).
function H.wait_until(fn, seconds)
  local deadline = H.now() + (seconds or 10)
  repeat
    local v = fn()
    if v then return v end
    os.execute("sleep 0.05")
  until H.now() > deadline
  return nil, "timeout"
end

--- The whole of the file at `path`, or nil when there is none.
function H.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a"); f:close()
  return s
end

--- Wait until the file at `path` holds a complete text and return it (or
-- nil, "timeout" after `seconds`).  Complete: `complete(text)` is true, by
-- default "ends in a newline".  Reads once per poll, so what is checked is
-- what is returned; an empty file (just created) or half a write is never
-- complete.  A writer that can do so writes another name and renames it.
function H.wait_file(path, seconds, complete)
  complete = complete or function(s) return s:sub(-1) == "\n" end
  return H.wait_until(function()
    local s = H.read(path)
    return s and complete(s) and s
  end, seconds)
end

--- Approximate comparison for numeric specs: returns close(a, b [, tol])
-- (relative, at least absolute near 0) and same(t, a [, tol]) (asserts a
-- nested list, or a pd.array through totable, equals t within tol), both
-- with `default_tol` when no tol is given.
function H.approx(default_tol)
  local function close(a, b, tol)
    return math.abs(a - b) <= (tol or default_tol) * math.max(1, math.abs(a), math.abs(b))
  end
  local function same(t, a, tol)
    local pd = require "pd"
    local assert = require "luassert"     -- busted's assert, not the global
    local u = pd.isarray(a) and a:totable() or a
    assert.equals(#t, #u)
    for i = 1, #t do
      if type(t[i]) == "table" then same(t[i], u[i], tol)
      else assert.is_true(close(t[i], u[i], tol), ("[%d]: %s vs %s"):format(i, tostring(t[i]), tostring(u[i]))) end
    end
  end
  return close, same
end

return H
