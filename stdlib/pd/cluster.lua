--- pd.cluster: many machines as one pool (docs/operations.md).
--
-- The session side of `pd.init{nodes=...}` / `pdlua run --nodes`, and the
-- `pdlua nodes` and `pdlua ctl` commands.  The work is C: core/cluster.c
-- (the coordinator's bridge to its nodes), core/node.c (`pdlua serve`),
-- through pd.core.cluster.  A node's slots join the same scheduler as the
-- local workers (pd.map's pool), so pd.map, pd.map_async and what is built
-- on them spread over every node with the same batching, ordering and
-- retries.
local core = require "pd.core"
local ccl = require "pd.core.cluster"

local M = {}

local function env_number(name, default)
  local v = tonumber(os.getenv(name) or "")
  return v and v > 0 and v or default
end

--- Split "a,b,c" (or take a list) into a list of URLs.
local function url_list(v)
  if v == nil then return {} end
  if type(v) == "string" then
    local t = {}
    for u in v:gmatch("[^,%s]+") do t[#t + 1] = u end
    return t
  end
  if type(v) ~= "table" then error("nodes: a list of URLs expected", 3) end
  return v
end
M.url_list = url_list

--- M.start{nodes=, secret=, secret_file=, tls_ca=, discover=} -> cluster
-- Connects to every node and waits (a few seconds at most) for each to
-- answer.  A node that refuses us (wrong or missing secret) is an error
-- raised here, before anything runs; one that cannot be reached yet is
-- reported on stderr and joins when it comes up.
function M.start(opts)
  local cl = ccl.new {
    secret = opts.secret, secret_file = opts.secret_file, tls_ca = opts.tls_ca,
    discover = opts.discover, heartbeat = opts.heartbeat,
    connect_timeout = env_number("PDLUA_CONNECT_TIMEOUT", 3),
  }
  local idx = {}
  for _, url in ipairs(url_list(opts.nodes)) do idx[#idx + 1] = cl:add(url) end
  local wait = env_number("PDLUA_CONNECT_TIMEOUT", 3) + 1
  local deadline = core.now() + wait
  for _, i in ipairs(idx) do
    local ok, err, kind = cl:wait(i, math.max(0.05, deadline - core.now()))
    if not ok then
      if kind == "refused" then
        cl:close()
        error(err, 0)
      end
      io.stderr:write("pdlua: ", err, " (it joins when it answers)\n")
    end
  end
  return cl
end

-- ---------------------------------------------------------------------------
-- pdlua nodes / pdlua ctl

local function parse(args, spec)
  local o, rest = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, val = a:match("^(%-%-[%w%-]+)=(.*)$")
    name = name or a
    local kind = spec[name]
    if kind == "value" then
      if val == nil then
        i = i + 1
        val = args[i]
        if val == nil then error("option '" .. name .. "' needs a value", 0) end
      end
      o[name] = val
    elseif kind == "flag" and val == nil then
      o[name] = true
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  return o, rest
end

local function fmt_node(n)
  if not n.alive then
    return string.format("%-32s down: %s", n.url, n.error or "no answer")
  end
  return string.format("%-32s name=%s cpus=%d gpus=%d busy=%d coordinators=%d", n.url, n.name,
                       n.cpus, n.gpus, n.busy, n.coordinators or 0)
end

local function cli_nodes(args)
  local o, rest = parse(args, { ["--nodes"] = "value", ["--discover"] = "flag",
                                ["--secret-file"] = "value", ["--tls-ca"] = "value",
                                ["--wait"] = "value", ["--json"] = "flag" })
  if #rest > 0 then
    io.stderr:write("pdlua nodes: unknown argument '", rest[1], "'\n",
                    "usage: pdlua nodes [--nodes URL,... | --discover] [--secret-file F] ",
                    "[--tls-ca F] [--wait SECONDS] [--json]\n")
    return 2
  end
  local opt = core.options()
  local secret_file = o["--secret-file"] or opt.secret_file
  local urls = url_list(o["--nodes"] or opt.nodes)
  local found = {}
  if o["--discover"] or opt.discover then
    local secs = tonumber(o["--wait"] or "") or env_number("PDLUA_DISCOVER_WAIT", 2.5)
    local heard, err = ccl.listen(secs, { secret_file = secret_file })
    if not heard then io.stderr:write("pdlua nodes: ", err, "\n"); return 1 end
    for _, b in ipairs(heard) do
      urls[#urls + 1] = b.url
      found[b.url] = b
    end
  end
  if #urls == 0 then
    io.stderr:write("pdlua nodes: no nodes (give --nodes URL,... or --discover)\n")
    return 1
  end
  local failed = 0
  local rows = {}
  for _, url in ipairs(urls) do
    local info, err = ccl.query(url, { secret_file = secret_file, tls_ca = o["--tls-ca"] or opt.tls_ca,
                                       timeout = env_number("PDLUA_CONNECT_TIMEOUT", 3) })
    if not info then
      failed = failed + 1
      info = { url = url, alive = false, error = err:gsub("^node %S+: ", "") }
    end
    rows[#rows + 1] = info
  end
  for _, n in ipairs(rows) do
    if o["--json"] then
      print(string.format('{"url":%q,"name":%q,"cpus":%d,"gpus":%d,"busy":%d,"alive":%s%s}',
                          n.url, n.name or "", n.cpus or 0, n.gpus or 0, n.busy or 0,
                          tostring(n.alive), n.error and (',"error":' .. string.format("%q", n.error)) or ""))
    else
      print(fmt_node(n))
    end
  end
  return failed == #rows and 1 or 0
end

local function cli_ctl(args)
  local o, rest = parse(args, { ["--node"] = "value", ["--cpus"] = "value", ["--gpus"] = "value",
                                ["--secret-file"] = "value", ["--tls-ca"] = "value" })
  local usage = "usage: pdlua ctl --node URL set --cpus N [--gpus N] [--secret-file F]\n"
  if rest[1] ~= "set" or #rest ~= 1 or not o["--node"] or not (o["--cpus"] or o["--gpus"]) then
    io.stderr:write("pdlua ctl: ", usage)
    return 2
  end
  local function count(flag)
    local v = o[flag]
    if v == nil then return nil end
    local n = tonumber(v)
    if not n or n < 0 or n > 100000 or n % 1 ~= 0 then  -- as pdlua serve's flags
      error(flag .. " wants a whole number >= 0, got '" .. v .. "'", 0)
    end
    return n
  end
  local opt = core.options()
  local info, err = ccl.query(o["--node"], { secret_file = o["--secret-file"] or opt.secret_file,
                                             tls_ca = o["--tls-ca"] or opt.tls_ca,
                                             cpus = count("--cpus"), gpus = count("--gpus") })
  if not info then io.stderr:write("pdlua ctl: ", err, "\n"); return 1 end
  print(fmt_node(info))
  return 0
end

-- The subcommands this module serves (lua/pdlua.c's table names them too).
local commands = { nodes = cli_nodes, ctl = cli_ctl }

--- Entry of `pdlua nodes ...` and `pdlua ctl ...`: returns the exit status.
function M.cli(name, args)
  local cmd = commands[name]
  if not cmd then
    io.stderr:write("pdlua: pd.cluster serves no subcommand '", tostring(name), "'\n")
    return 2
  end
  local ok, rc = pcall(cmd, args)
  if not ok then
    io.stderr:write("pdlua ", name, ": ", tostring(rc), "\n")
    return 1
  end
  return rc
end

return M
