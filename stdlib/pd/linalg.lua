--- pd.linalg: linear algebra on pd.array (OpenBLAS and LAPACKE).
-- eigh, cholesky, solve, matmul, dot; see docs/arrays.md.
require "pd.core"
return require("pd.core.array").linalg
