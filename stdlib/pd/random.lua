--- pd.random: reproducible random streams (Philox4x64-10, counter-based).
--
-- pd.random.new(seed [, stream]) and pd.random.stream(seed, index) make
-- generators; pd.rng() is the generator of the running task.  See
-- docs/arrays.md ("Random numbers").
--
-- Contract for pd.map / pd.tasks (the runner of a task): before running
-- task i of a job with seed s, call `require("pd.random").set_task(s, i)`;
-- after the task, `set_task(nil)`.  pd.rng() inside the task then returns
-- pd.random.stream(s, i), made on first use and the same object for the
-- rest of that task.  Outside any task, pd.rng() is stream 0 of the seed
-- given to `pdlua run --seed` (0 when none).
require "pd.core"
local native = require "pd.core.random"

local M = {}
for k, v in pairs(native) do M[k] = v end

local task_seed, task_index, current

--- Set (or with seed nil, clear) the task whose stream pd.rng() returns.
function M.set_task(seed, index)
  task_seed, task_index, current = seed, index, nil
end

--- The generator of the running task (see above).
function M.rng()
  if current == nil then
    local seed, index = task_seed, task_index
    if seed == nil then
      local opts = require("pd.core").options()
      local s = tonumber(opts.seed)
      seed, index = s and math.floor(s) or 0, 0
    end
    current = native.stream(seed, index or 0)
  end
  return current
end

return M
