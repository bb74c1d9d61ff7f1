/*
 * call.c: the one way into Lua (pdi_docall with pdi_msghandler), shared by
 * the pdlua command, the REPL, and the native module (workers too).
 */
#include "binding.h"

#include <signal.h>

/* ---- signals (as lua.c) ------------------------------------------------- */

static lua_State *globalL = NULL;

static void lstop(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

static void laction(int i) {
  signal(i, SIG_DFL); /* a second Ctrl-C kills the process */
  lua_sethook(globalL, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

int pdi_msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {                               /* not a string/number */
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;                                    /* its own text, with any
                                                      remote traceback in it */
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);                    /* [msg, traceback] */
  return 1;
}

int pdi_docall(lua_State *L, int nargs, int nres) {
  int base = lua_gettop(L) - nargs;                /* function index */
  lua_pushcfunction(L, pdi_msghandler);
  lua_insert(L, base);                             /* [handler, f, args] */
  globalL = L;
  void (*old)(int) = signal(SIGINT, laction);
  int status = lua_pcall(L, nargs, nres, base);
  signal(SIGINT, old == SIG_ERR ? SIG_DFL : old);
  lua_remove(L, base);                             /* drop the handler */
  return status;
}

