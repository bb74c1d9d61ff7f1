--- pd.error: the one error object of pdlua (metatable "pd.Error").
--
-- A failed task of pd.map or pd.tasks and an optimiser's refusal are all
-- tables with this metatable, so `pd.iserror(v)` is one check.  Fields:
--   message    what went wrong (always)
--   traceback  the traceback, the worker's for a remote failure ("" if none)
--   origin     "map" (default), "tasks" or "optim": which part raised it
-- map and tasks add task (index), node, pid, kind; optim adds point and
-- names (the point it failed at).  tostring() gives one readable line (and
-- the traceback under it).
local M = {}

local Error = {}
Error.__index = Error
Error.__name = "pd.Error"
Error.__pd_error = true     -- pd.iserror (stdlib/pd/init.lua) is true for it

local function point_text(e)
  local parts = {}
  if e.names then
    for _, k in ipairs(e.names) do parts[#parts + 1] = k .. " = " .. string.format("%.17g", e.point[k]) end
  else
    for i = 1, #e.point do parts[#parts + 1] = string.format("%.17g", e.point[i]) end
  end
  return " (at point {" .. table.concat(parts, ", ") .. "})"
end

function Error.__tostring(e)
  if e.origin == "optim" then
    local s = "pd.optim: " .. tostring(e.message)
    if e.point then s = s .. point_text(e) end
    if e.traceback then s = s .. "\n" .. e.traceback end
    return s
  end
  local s = string.format("task %s failed on %s: %s", tostring(e.task), tostring(e.node),
                          tostring(e.message))
  local tb = e.traceback
  if tb and tb ~= "" then s = s .. "\n(worker) " .. tb end
  return s
end

M.Error = Error

--- pd.error.new(t) -> t as an error object (t is taken, not copied).
function M.new(t) return setmetatable(t, Error) end

--- pd.error.is(v) -> true when v is an error object of pdlua.
function M.is(v) return getmetatable(v) == Error end

--- pd.error.raise(t [, level]): raise t as an error object (level 0 by
-- default: the object says where it comes from itself).
function M.raise(t, level) error(setmetatable(t, Error), level or 0) end

return M
