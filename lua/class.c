/*
 * class.c: metatables for the binding's handle types, made one way
 * (pdi_newclass), and the failure path of the debug asserts (binding.h).
 */
#include "binding.h"

#include <stdio.h>
#include <stdlib.h>

/* __gc / __close of a type that holds nothing to release.  Stack: [u] -> [] */
static int no_close(lua_State *L) {
  (void)L;
  return 0;
}

int pdi_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                 const luaL_Reg *meta, lua_CFunction close) {
  if (!luaL_newmetatable(L, name)) return 0;           /* [mt] */
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  if (methods) {
    lua_newtable(L);                                   /* [mt, methods] */
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");                    /* [mt] */
  }
  if (meta) luaL_setfuncs(L, meta, 0);
  if (close) {                 /* a finalizer only where there is something */
    lua_pushcfunction(L, close);  /* to release: one keeps every dead object */
    lua_setfield(L, -2, "__gc");  /* for a second collection cycle */
  }
  lua_pushcfunction(L, close ? close : no_close);
  lua_setfield(L, -2, "__close");
  return 1;
}

#if PDI_ASSERTS
void pdi_assert_fail(const char *what, const char *file, int line) {
  fprintf(stderr, "pdlua: assertion failed at %s:%d: %s\n", file, line, what);
  fflush(stderr);
  abort();
}
#endif
