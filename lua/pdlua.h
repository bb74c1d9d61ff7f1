/*
 * pdlua.h: internal interface between the parts of the Lua binding (lua/).
 * Nothing here is public API; the names are pdi_ (internal to pdlua).
 */
#ifndef PDLUA_PDLUA_H
#define PDLUA_PDLUA_H

#include "compat.h"

/* Module openers of the native parts.  luaopen_pd_core registers the others
 * in package.preload as "pd.core.<name>" so that plain lua5.4 loading
 * build/lib/pd/core.so gets all of them from one file. */
int luaopen_pd_core(lua_State *L);
int luaopen_pd_core_map(lua_State *L);      /* map.c: pd.map, workers */
int luaopen_pd_core_gpu(lua_State *L);     /* gpu.c */
/* pd.core.array: arrays, pd.math, pd.linalg, pd.random (array.h). */
int luaopen_pd_core_array(lua_State *L);
int luaopen_pd_core_codec(lua_State *L);   /* codec.h */
int luaopen_pd_core_tubes(lua_State *L);   /* tubes.c: pd.tasks, tubes */
int luaopen_pd_core_cluster(lua_State *L); /* cluster.c: nodes, serve */
/* `pdlua serve ...` (cluster.c): runs until SIGINT/SIGTERM; exit status. */
int pdi_serve_main(int argc, char **argv);

/* Directory holding the pdlua executable (no trailing slash), or NULL when
 * it cannot be found.  Result is static storage, computed once. */
const char *pdi_exe_dir(void);
/* Path of the pdlua executable itself (for starting workers), or NULL. */
const char *pdi_exe_path(void);

/* Stdlib and native-module search paths for this build, as LUA_PATH and
 * LUA_CPATH strings (static storage). */
const char *pdi_lua_path(void);
const char *pdi_lua_cpath(void);
void pdi_add_bc_searcher(lua_State *L);   /* compiled stdlib first (paths.c) */

/* Message handler for lua_pcall: turns any error object into a string with
 * a traceback (tostring through __tostring; "(error object is a X value)"
 * otherwise).  Stack: [msg] -> [msg-with-traceback]. */
int pdi_msghandler(lua_State *L);

/* Call the function below nargs arguments with pdi_msghandler, and with
 * SIGINT turned into a Lua error while it runs.  Returns the lua_pcall
 * status.  Stack: [f, args...] -> [results...] or [errstring]. */
int pdi_docall(lua_State *L, int nargs, int nres);

/* The REPL (repl.c): reads, evaluates and prints until end of input.
 * Returns the process exit status. */
int pdi_repl(lua_State *L);

#endif
