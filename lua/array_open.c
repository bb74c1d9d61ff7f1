/*
 * array_open.c: luaopen_pd_core_array, pd.array put together.  The pd.Array
 * class is array.c's (pdi_array_newclass); its methods come from the
 * module's files, listed here, and the module table holds the constructors
 * (array.c), pd.linalg (linalg.c) and pd.math (array_ops.c).  Nothing else
 * is done here: each file's contract opens that file.
 *
 * pd.random and the optimisers' kernels are native modules of their own
 * (pd.core.random, random.c; pd.core.optim, optim.c), which use pd.array;
 * pd.array does not use them.  Until every reader has moved (see
 * moved_field), the old names pd.core.array.random and .optim still answer,
 * by requiring the new modules by name.
 */
#include "array.h"

#include <string.h>

#include "binding.h"

/* The methods and metamethods of pd.Array, by file. */
static const luaL_Reg *const class_methods[] = {
  pdi_array_core_methods, pdi_array_ops_methods, pdi_array_reduce_methods, pdi_linalg_methods,
  NULL,
};
static const luaL_Reg *const class_meta[] = {pdi_array_core_meta, pdi_array_ops_meta, NULL};

/* __index of the module table: the fields that moved out of it, looked up
 * as require(name) on each use (nothing cached, so pairs() on the table
 * sees only its own fields).  pd.core.array.random is still read by
 * stdlib/pd/map.lua (pd.rng) and stdlib/pd/tasknode.lua, .optim by
 * spec/optim_spec.lua; when they require "pd.core.random" and
 * "pd.core.optim" themselves, this goes.  Stack: [t, k] -> [v] or [] */
static int moved_field(lua_State *L) {
  const char *k = lua_tostring(L, 2);
  const char *mod = NULL;
  if (k && strcmp(k, "random") == 0) mod = "pd.core.random";
  else if (k && strcmp(k, "optim") == 0) mod = "pd.core.optim";
  if (!mod) return 0;
  lua_getglobal(L, "require");                        /* [t, k, require] */
  lua_pushstring(L, mod);                             /* [t, k, require, mod] */
  lua_call(L, 1, 1);                                  /* [t, k, v] */
  return 1;
}

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
  lua_createtable(L, 0, 1);                           /* [t, mt] */
  lua_pushcfunction(L, moved_field);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);                            /* [t] */
  PDI_STACK_CHECK(L, 1);
  return 1;
}
