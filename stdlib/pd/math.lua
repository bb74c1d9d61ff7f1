--- pd.math: element-wise functions of numbers and pd.array values
-- (exp, log, sqrt, sin, cos, abs, ..., minimum, maximum); see docs/arrays.md.
require "pd.core"
return require("pd.core.array").math
