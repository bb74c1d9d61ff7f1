--- pd.optim.space: the search space of a spec, and the value f receives.
--
-- A spec gives either a list of numbers (dim, bounds, init) or named
-- parameters (params, Playdoh's keyword style); both become one space
--   S = {n, names (nil for a list), lo, hi (the bounds, +-inf where none),
--        ilo, ihi (the initial range, always finite)}
-- which the optimisers work in (points are lists of n numbers) and which
-- decode turns back into what f receives.  A bad spec is a misuse: it
-- raises a plain error at the level of the caller's caller (the user's
-- line for the ask-and-tell constructors).
local M = {}

local huge = math.huge

local function pair(v, what)
  if type(v) ~= "table" or type(v[1]) ~= "number" or type(v[2]) ~= "number" then
    error("pd.optim: " .. what .. " must be {lo, hi}", 4)
  end
  if not (v[1] <= v[2]) then error("pd.optim: " .. what .. ": lo > hi", 4) end
  return v[1], v[2]
end

--- Parse the space of a spec into {n, names, lo, hi, ilo, ihi}.
-- params = {name = {imin, imax} | {bmin, imin, imax, bmax}}, as Playdoh's
-- keyword parameters: the 2-element form is an initial range with no
-- bounds, the 4-element form bounds and initial range.  Playdoh's suffixes
-- work too: name_bounds = {lo, hi} and name_initrange = {lo, hi}.
function M.parse(spec)
  local S = { lo = {}, hi = {}, ilo = {}, ihi = {} }
  if spec.params then
    local byname = {}
    for key, v in pairs(spec.params) do
      local base, suffix = tostring(key):match("^(.+)_(bounds)$")
      if not base then base, suffix = tostring(key):match("^(.+)_(initrange)$") end
      if not base then base, suffix = key, "raw" end
      local e = byname[base] or { lo = -huge, hi = huge }
      byname[base] = e
      if suffix == "bounds" then
        e.lo, e.hi = pair(v, "params." .. key)
        if not e.ilo then e.ilo, e.ihi = e.lo, e.hi end
      elseif suffix == "initrange" then
        e.ilo, e.ihi = pair(v, "params." .. key); e.init_set = true
      elseif type(v) == "table" and #v == 4 then
        e.lo, e.ilo, e.ihi, e.hi = v[1], v[2], v[3], v[4]
        if not (e.lo <= e.ilo and e.ilo <= e.ihi and e.ihi <= e.hi) then
          error("pd.optim: params." .. key .. " must be {bmin, imin, imax, bmax} in order", 3)
        end
      else
        e.ilo, e.ihi = pair(v, "params." .. key)
      end
    end
    S.names = {}
    for name in pairs(byname) do S.names[#S.names + 1] = name end
    table.sort(S.names)
    for i, name in ipairs(S.names) do
      local e = byname[name]
      S.lo[i], S.hi[i], S.ilo[i], S.ihi[i] = e.lo, e.hi, e.ilo, e.ihi
    end
    S.n = #S.names
  else
    local b, init = spec.bounds, spec.init
    local n = spec.dim
    local per = function(v) return type(v) == "table" and type(v[1]) == "table" end
    if not n then
      if per(b) then n = #b elseif per(init) then n = #init end
    end
    if type(n) ~= "number" or n < 1 then
      error("pd.optim: give dim (with bounds or init) or params", 3)
    end
    S.n = n
    for i = 1, n do
      if b then
        local bi = per(b) and b[i] or b
        S.lo[i], S.hi[i] = pair(bi, "bounds")
      else
        S.lo[i], S.hi[i] = -huge, huge
      end
      if init then
        local ii = per(init) and init[i] or init
        S.ilo[i], S.ihi[i] = pair(ii, "init")
      else
        S.ilo[i], S.ihi[i] = S.lo[i], S.hi[i]
      end
      if not (S.ilo[i] > -huge and S.ihi[i] < huge) then
        error("pd.optim: dimension " .. i .. " has no finite initial range (give bounds or init)", 3)
      end
    end
  end
  if S.n < 1 then error("pd.optim: empty search space", 3) end
  return S
end

--- The value f receives for point x (a list): x itself, or a table of
-- named values.
function M.decode(S, x)
  if not S.names then return x end
  local t = {}
  for i, name in ipairs(S.names) do t[name] = x[i] end
  return t
end

--- True when some coordinate of S has a finite bound.
function M.bounded(S)
  for i = 1, S.n do if S.lo[i] > -huge or S.hi[i] < huge then return true end end
  return false
end

--- A copy of the options o with the space's dim, lower/upper (the bounds)
-- and init_lower/init_upper (the initial range): how PSO and the GA take
-- a space.
function M.options(S, o)
  local opts = {}
  for k, v in pairs(o) do opts[k] = v end
  opts.dim = S.n
  opts.lower, opts.upper, opts.init_lower, opts.init_upper = S.lo, S.hi, S.ilo, S.ihi
  return opts
end

return M
