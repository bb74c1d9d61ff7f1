--- pd.codec: Lua values <-> bytes (docs/wire.md), and code transport.
--
-- encode/decode are the native codec (lua/codec_enc.c, codec_dec.c; C API in lua/codec.h).
-- The rest of this file is code transport (docs/reference.md, "## pd.codec"):
--
--   local b = pd.codec.bundle("sim.lua")      -- script + its local modules
--   local s = pd.codec.sender(b)              -- one per receiver
--   msg = s:encode(v)                         -- ships sources it has not sent
--   -- on the receiver, in its own process and Lua state:
--   local r = pd.codec.receiver{ dir = cache_dir, bytecode = trusted }
--   v = r:decode(msg)                         -- installs modules, then decodes
--
-- Sources are named by SHA-256 and sent once per sender (that is, per
-- receiver); the receiver keeps them (in memory, and in `dir` if given) and
-- loads them in text mode only.  A local C module cannot be shipped: encoding
-- a value that needs one fails at once with the module's name.
local core = require "pd.core"            -- first: it registers pd.core.<part>
local native = require "pd.core.codec"

local M = {
  version = native.version,
  encode = native.encode,
  decode = native.decode,
  fingerprint = native.fingerprint,
}

--- pd.codec.safe.encode / pd.codec.safe.decode: the same calls, returning
-- nil and the message instead of raising (as cjson.safe does).
local function safe(f)
  return function(...)
    local ok, r = pcall(f, ...)
    if ok then return r end
    return nil, r
  end
end
M.safe = { encode = safe(native.encode), decode = safe(native.decode) }

local FORMAT = "pd.bundle/1"

local function readfile(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a") or f:read("*a")
  f:close()
  return s
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function under(root, path)
  if root == "." then return path:sub(1, 1) ~= "/" and path:sub(1, 3) ~= "../" end
  return path:sub(1, #root + 1) == root .. "/"
end

local function relpath(root, path)
  if root ~= "." and under(root, path) then return path:sub(#root + 2) end
  return (path:gsub("^%./", ""))
end

--- pd.codec.bundle([script [, opts]]) -> bundle
-- The job script (default arg[0]) and every module in package.loaded whose
-- Lua file lives under the script's directory (opts.root overrides it).
-- Modules of the pd stdlib are never shipped (every receiver has them).
-- Fields: root, entry = {sha, path}, modules = {name -> {sha, path}},
-- cmodules = {name -> path} (local C modules: not shippable),
-- sources = {sha -> text}.  Call it after the script's requires ran (or
-- again later: it is cheap) so that the modules are known.
function M.bundle(script, opts)
  opts = opts or {}
  script = script or (arg and arg[0])
  local root = opts.root or (script and dirname(script)) or "."
  local b = { format = FORMAT, root = root, modules = {}, cmodules = {}, sources = {} }
  local function add(path)
    local src = assert(readfile(path))
    local sha = core.sha256(src)
    b.sources[sha] = src
    return sha
  end
  if script then b.entry = { sha = add(script), path = relpath(root, script) } end
  local lpath = root .. "/?.lua;" .. root .. "/?/init.lua"
  local cpath = root .. "/?.so"
  for name in pairs(package.loaded) do
    if type(name) == "string" and name ~= "pd" and not name:match("^pd%.") then
      local p = package.searchpath(name, lpath)
      if p and (not script or p ~= script) then
        b.modules[name] = { sha = add(p), path = relpath(root, p) }
      elseif package.searchpath(name, cpath) then
        b.cmodules[name] = package.searchpath(name, cpath)
      end
    end
  end
  return b
end

local Sender = {}
Sender.__index = Sender

--- pd.codec.sender(bundle [, opts]) -> sender for one receiver.
-- opts.strip: strip debug info from functions.  s.sent is the set of
-- source hashes this receiver was sent.
function M.sender(bundle, opts)
  return setmetatable({ bundle = bundle, sent = {}, opts = opts or {} }, Sender)
end

--- s:encode(v) -> message.  Raises when v cannot travel, or when v names a
-- local C module ("pd.codec: module 'm' is a C module (path) and cannot be
-- shipped").  Marks the shipped sources as sent.
function Sender:encode(v)
  local b = self.bundle
  local used = {}
  local body = native.encode(v, { strip = self.opts.strip, modules = used })
  for m in pairs(used) do
    -- a dotted name may be a field path of a loaded C module's parent
    if b.cmodules[m] then
      error(("pd.codec: module '%s' is a C module (%s) and cannot be shipped"):format(
        m, b.cmodules[m]), 2)
    end
  end
  local modules, blobs, sent = {}, {}, {}
  local function ship(sha)
    if not self.sent[sha] then
      blobs[sha] = b.sources[sha]
      sent[#sent + 1] = sha
    end
  end
  for name, m in pairs(b.modules) do
    modules[name] = { sha = m.sha, path = m.path }
    ship(m.sha)
  end
  if b.entry then ship(b.entry.sha) end
  local msg = native.encode({
    format = FORMAT,
    vm = native.fingerprint(),
    entry = b.entry and { sha = b.entry.sha, path = b.entry.path } or nil,
    modules = modules,
    blobs = blobs,
    value = body,
  })
  for _, sha in ipairs(sent) do self.sent[sha] = true end
  return msg
end

--- s:forget([sha]) -> forget that the receiver has sha (or everything),
-- e.g. after it reported a cache miss or restarted.
function Sender:forget(sha)
  if sha then self.sent[sha] = nil else self.sent = {} end
end

local Receiver = {}
Receiver.__index = Receiver

--- pd.codec.receiver([opts]) -> receiver.  opts.dir: a directory caching
-- sources as <sha>.lua across processes; opts.bytecode: accept functions
-- (only for an authenticated peer running the same VM; default false);
-- opts.require: let library names load modules (default true).
function M.receiver(opts)
  opts = opts or {}
  return setmetatable({ cache = {}, installed = {}, dir = opts.dir,
                        bytecode = opts.bytecode and true or false,
                        require = opts.require ~= false }, Receiver)
end

--- r:source(sha) -> text or nil: a cached source (memory, then dir).
function Receiver:source(sha)
  local src = self.cache[sha]
  if not src and self.dir and sha:match("^%x+$") then
    src = readfile(self.dir .. "/" .. sha .. ".lua")
    if src and core.sha256(src) == sha then self.cache[sha] = src else src = nil end
  end
  return src
end

--- r:has(sha) -> boolean
function Receiver:has(sha) return self:source(sha) ~= nil end

local function bad(why) error("pd.codec: malformed bundle message: " .. why, 3) end

--- r:decode(msg) -> v.  Stores the shipped sources (each checked against
-- its SHA-256), makes the bundle's modules requirable (package.preload,
-- text mode only; a module whose hash changed is reloaded), then decodes
-- the value.  r.entry is the job script's {sha, path} when one was sent.
function Receiver:decode(msg)
  local t = native.decode(msg, { bytecode = false, require = false })
  if type(t) ~= "table" or t.format ~= FORMAT then bad("not a bundle message") end
  if type(t.blobs) ~= "table" or type(t.modules) ~= "table" or type(t.value) ~= "string" then
    bad("missing fields")
  end
  for sha, src in pairs(t.blobs) do
    if type(sha) ~= "string" or type(src) ~= "string" then bad("bad source entry") end
    if core.sha256(src) ~= sha then bad("source does not match its hash " .. sha) end
    self.cache[sha] = src
    if self.dir then
      local f = io.open(self.dir .. "/" .. sha .. ".lua", "wb")
      if f then f:write(src); f:close() end
    end
  end
  for name, m in pairs(t.modules) do
    if type(name) ~= "string" or type(m) ~= "table" or type(m.sha) ~= "string" then
      bad("bad module entry")
    end
    local src = self:source(m.sha)
    if not src then
      error(("pd.codec: module '%s' (source %s) is not in this receiver's cache"):format(
        name, m.sha), 2)
    end
    if self.installed[name] ~= m.sha then
      local chunk = "@" .. tostring(m.path or name)
      package.preload[name] = function(...)
        local f = assert(load(src, chunk, "t"))
        return f(...)
      end
      package.loaded[name] = nil
      self.installed[name] = m.sha
    end
  end
  if t.entry ~= nil then
    if type(t.entry) ~= "table" or type(t.entry.sha) ~= "string" then bad("bad entry") end
    if not self:source(t.entry.sha) then
      error(("pd.codec: job script (source %s) is not in this receiver's cache"):format(
        t.entry.sha), 2)
    end
    self.entry = { sha = t.entry.sha, path = t.entry.path }
  end
  if self.bytecode and t.vm ~= native.fingerprint() then
    error(("pd.codec: the sender runs another VM (fingerprint %s, this is %s %s)"):format(
      tostring(t.vm), native.fingerprint(), core.vm), 2)
  end
  return native.decode(t.value, { bytecode = self.bytecode, require = self.require })
end

return M
