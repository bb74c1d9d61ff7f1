--- pd.pretty: print values the way the REPL shows them.
--
-- `pretty(v...)` prints each value tab-separated on one line: tables as
-- `{1, 2, x = 3}` (nested up to a depth, long ones cut with `...`, cycles
-- shown as `<cycle>`), strings quoted when inside a table, anything with a
-- `__tostring` through it.  `pretty.format(v)` returns the text instead.
local M = {}

local MAX_ITEMS, MAX_DEPTH = 40, 4

local function is_ident(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function fmt(v, depth, seen, nested)
  local t = type(v)
  if t == "string" then
    return nested and string.format("%q", v) or v
  elseif t ~= "table" then
    return tostring(v)
  end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return tostring(v) end
  if seen[v] then return "<cycle>" end
  if depth >= MAX_DEPTH then return "{...}" end
  seen[v] = true
  local parts, n = {}, #v
  local count = 0
  for i = 1, n do
    count = count + 1
    if count > MAX_ITEMS then parts[#parts + 1] = "..."; break end
    parts[#parts + 1] = fmt(v[i], depth + 1, seen, true)
  end
  if count <= MAX_ITEMS then
    local keys = {}
    for k in pairs(v) do
      if not (math.type and math.type(k) == "integer" or (type(k) == "number" and k % 1 == 0))
         or k < 1 or k > n then
        keys[#keys + 1] = k
      end
    end
    table.sort(keys, function(a, b)
      local ta, tb = type(a), type(b)
      if ta ~= tb then return ta < tb end
      if ta == "string" or ta == "number" then return a < b end
      return tostring(a) < tostring(b)
    end)
    for _, k in ipairs(keys) do
      count = count + 1
      if count > MAX_ITEMS then parts[#parts + 1] = "..."; break end
      local ks = is_ident(k) and k or ("[" .. fmt(k, depth + 1, seen, true) .. "]")
      parts[#parts + 1] = ks .. " = " .. fmt(v[k], depth + 1, seen, true)
    end
  end
  seen[v] = nil
  return "{" .. table.concat(parts, ", ") .. "}"
end

function M.format(v) return fmt(v, 0, {}, false) end

return setmetatable(M, {
  __call = function(_, ...)
    local n = select("#", ...)
    local out = {}
    for i = 1, n do out[i] = fmt((select(i, ...)), 0, {}, false) end
    print(table.concat(out, "\t"))
  end,
})
