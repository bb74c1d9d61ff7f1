/*
 * call.c: the one way into Lua (pdi_docall with pdi_msghandler), shared by
 * the pdlua command, the REPL, and the native module (workers too: a job's
 * loader runs under pdi_msghandler, its tasks under pdi_msghandler_table).
 * Both handlers name an error object by the same text (error_text).
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

/* Push the text of the error object at idx: itself when a string or a
 * number, else what its __tostring gives when that is a string, else
 * "(error object is a X value)".  Returns 1 when the text came from
 * __tostring (an object that says itself, remote traceback included).
 * Stack: [] -> [text] */
static int error_text(lua_State *L, int idx) {
  PDI_STACK(L);
  if (lua_tostring(L, idx) != NULL) {
    lua_pushvalue(L, idx);                         /* [text] */
    PDI_STACK_CHECK(L, 1);
    return 0;
  }
  if (luaL_callmeta(L, idx, "__tostring")) {       /* [text?] */
    if (lua_type(L, -1) == LUA_TSTRING) {
      PDI_STACK_CHECK(L, 1);
      return 1;
    }
    lua_pop(L, 1);                                 /* [] */
  }
  lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
  PDI_STACK_CHECK(L, 1);
  return 0;
}

/* As binding.h says; on the stack [err] -> [err, text] when the object has
 * its own text, else [err, msg, traceback], the last returned. */
int pdi_msghandler(lua_State *L) {
  PDI_STACK(L);
  if (error_text(L, 1)) {                          /* its own text, as it is */
    PDI_STACK_CHECK(L, 1);
    return 1;
  }
  luaL_traceback(L, L, lua_tostring(L, -1), 1);    /* [err, msg, traceback] */
  PDI_STACK_CHECK(L, 2);
  return 1;
}

/* As binding.h says; on the stack [err] -> [err, t]. */
int pdi_msghandler_table(lua_State *L) {
  PDI_STACK(L);
  error_text(L, 1);                                /* [err, msg] */
  lua_createtable(L, 0, 2);                        /* [err, msg, t] */
  lua_insert(L, -2);                               /* [err, t, msg] */
  lua_setfield(L, -2, "message");                  /* [err, t] */
  luaL_traceback(L, L, NULL, 1);                   /* [err, t, traceback] */
  lua_setfield(L, -2, "traceback");                /* [err, t] */
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* Stack: [f, args...] -> [results...] (nres of them, or all with
 * LUA_MULTRET) or [errstring], as binding.h says. */
int pdi_docall(lua_State *L, int nargs, int nres) {
  PDI_STACK(L);
  int base = lua_gettop(L) - nargs;                /* function index */
  lua_pushcfunction(L, pdi_msghandler);
  lua_insert(L, base);                             /* [handler, f, args] */
  globalL = L;
  void (*old)(int) = signal(SIGINT, laction);
  int status = lua_pcall(L, nargs, nres, base);
  signal(SIGINT, old == SIG_ERR ? SIG_DFL : old);
  lua_remove(L, base);                             /* drop the handler */
  if (status != LUA_OK || nres != LUA_MULTRET)
    PDI_STACK_CHECK(L, (status == LUA_OK ? nres : 1) - nargs - 1);
  return status;
}

