/*
 * array_open.c: luaopen_pd_core_array, pd.array put together.  The pd.Array
 * class is array.c's (pdi_array_newclass); its methods come from the
 * module's files, listed here, and the module table holds the constructors
 * (array.c), pd.linalg (linalg.c) and pd.math (array_ops.c).  Nothing else
 * is done here: each file's contract opens that file.
 *
 * pd.random and the optimisers' kernels are native modules of their own
 * (pd.core.random, random.c; pd.core.optim, optim.c), which use pd.array;
 * pd.array does not use them.
 */
#include "array.h"

#include "binding.h"

/* The methods and metamethods of pd.Array, by file. */
static const luaL_Reg *const class_methods[] = {
  pdi_array_core_methods, pdi_array_ops_methods, pdi_array_reduce_methods, pdi_linalg_methods,
  NULL,
};
static const luaL_Reg *const class_meta[] = {pdi_array_core_meta, pdi_array_ops_meta, NULL};

/* Stack: [] -> [t] */
int luaopen_pd_core_array(lua_State *L) {
  PDI_STACK(L);
  pdi_array_newclass(L, class_methods, class_meta);
  lua_newtable(L);                                    /* [t] */
  luaL_setfuncs(L, pdi_array_funcs, 0);
  pdi_linalg_push(L);                                 /* [t, linalg] */
  lua_setfield(L, -2, "linalg");                      /* [t] */
  pdi_array_push_math(L);                             /* [t, math] */
  lua_setfield(L, -2, "math");                        /* [t] */
  PDI_STACK_CHECK(L, 1);
  return 1;
}
