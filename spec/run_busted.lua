-- Run busted inside pdlua, so specs see `require "pd"` exactly as job
-- scripts do.  ctest calls: pdlua run spec/run_busted.lua -o TAP spec/x_spec.lua
local src = os.getenv("PDLUA_SOURCE") or "."
package.path = src .. "/spec/?.lua;" .. package.path
require("busted.runner")({ standalone = false })
