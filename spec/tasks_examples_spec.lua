-- examples/heat.lua, pi.lua and life.lua run at small sizes: each checks
-- its parallel answer against a serial one itself (an assert), and prints
-- its answer, its times and its speed-up over one node.
local H = require "helper"

local function run(script, args)
  local out, err, rc = H.pdlua_run("run " .. H.q(H.source .. "/examples/" .. script) .. " " .. args
                                   .. " --cpus 3 --no-progress")
  assert.equals(0, rc, err)
  assert.matches("speed%-up [%d.]+x over one node", out)
  return out
end

describe("task-set examples", function()
  it("heat: strips swapping halo rows match the serial solution", function()
    local out = run("heat.lua", "48 30 3")
    assert.matches("largest difference from serial 0\n", out)
  end)

  it("pi: partial counts reduced up a tree of tubes", function()
    local out = run("pi_tubes.lua", "200000 3")
    local est = tonumber(out:match("on 3 nodes: ([%d.]+)"))
    assert.is_true(math.abs(est - math.pi) < 0.02, out)
  end)

  it("life: a torus split in strips matches the serial run", function()
    local out = run("life.lua", "40 20 3")
    assert.matches(", 0 cells differ", out)
  end)
end)
