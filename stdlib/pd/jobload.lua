--- pd.jobload: the worker side of a job blob (pd.pack.pack makes it).
--
-- blob -> f, shared.  Apart from pd.pack so that a worker process loads
-- these few lines before its first task instead of the coordinator side
-- (the packing and its caches); pd.pack.unpack calls this.  The C worker
-- loop caches the result per blob, so this runs once per mapped function.
local cmap = require "pd.core.map"

return function(blob)
  local len, rest = blob:match("^(%d+):()")
  len = tonumber(len)
  local paths = cmap.decode(blob:sub(rest, rest + len - 1))
  if os.getenv("PDLUA_REMOTE_WORKER") then
    -- cluster: a node's worker keeps its own paths (the coordinator's may
    -- not exist here) and gets the job's modules from the job itself,
    -- before the function (which may name them) is decoded
    for name, m in pairs(paths.mods or {}) do
      if package.loaded[name] == nil then
        package.preload[name] = function(...)
          return assert(load(m.src, "@" .. m.path, "t"))(...)
        end
      end
    end
  else
    package.path, package.cpath = paths.path or package.path, paths.cpath or package.cpath
  end
  local spec = cmap.decode(blob:sub(rest + len))
  if type(spec.f) ~= "function" then error("pd.map: the job carries no function", 0) end
  return spec.f, spec.shared
end
