-- spec/optim_examples_spec.lua: the optimisation examples run and find
-- what they claim (fixed seeds).
local H = require "helper"

local function run(name)
  local out, err, rc = H.pdlua_run("run " .. H.q(H.source .. "/examples/" .. name))
  assert.are.equal(0, rc, err)
  return out
end

describe("optimisation examples", function()
  it("fit_oscillator.lua recovers the oscillator's parameters", function()
    local out = run("fit_oscillator.lua")
    for name, truth in pairs { a = 2.0, gamma = 0.3, omega = 2.5, phi = 0.7 } do
      local t, fit = out:match("\n" .. name .. "%s+([%d%.%-]+)%s+([%d%.%-]+)")
      assert.are.equal(truth, tonumber(t))
      assert.is_true(math.abs(tonumber(fit) - truth) < 0.05, name)
    end
  end)
  it("fit_neurons.lua fits every neuron of its group to the spike", function()
    local out = run("fit_neurons.lua")
    local n = 0
    for d in out:gmatch("\n%d+%s+[%d%.]+%s+[%d%.]+%s+[%d%.]+%s+[%d%.]+%s+(%S+)") do
      n = n + 1
      assert.are.equal(0, tonumber(d))
    end
    assert.are.equal(3, n)
  end)
end)
