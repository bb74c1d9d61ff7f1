/*
 * binding.h: the internal umbrella of the Lua binding (lua/): the openers
 * of the native modules, the one protected call into Lua, the search paths,
 * metatable set-up, and the asserts that check stack effects.  Nothing here
 * is public API; the names are pdi_ (internal to pdlua).  The command's own
 * entry points (REPL, serve) are in command.h.
 */
#ifndef PDLUA_BINDING_H
#define PDLUA_BINDING_H

#include "compat.h"

/* Module openers of the native parts.  luaopen_pd_core registers the others
 * in package.preload as "pd.core.<name>" so that plain lua5.4 loading
 * build/lib/pd/core.so gets all of them from one file. */
int luaopen_pd_core(lua_State *L);
int luaopen_pd_core_map(lua_State *L);  /* map.c: pd.map, workers */
/* The rooms of pd.core.map (taskvalue.h) each add their functions to the
 * module table on top of the stack (the pool's also makes the "pd.Pool"
 * metatable).  Stack: [m] -> [m] */
void pdi_map_open_values(lua_State *L);  /* taskvalue.c */
void pdi_map_open_pool(lua_State *L);    /* pool.c */
void pdi_map_open_worker(lua_State *L);  /* worker.c */
void pdi_map_open_probe(lua_State *L);   /* probe.c */
int luaopen_pd_core_gpu(lua_State *L);     /* gpu.c */
/* pd.core.array: arrays, pd.math, pd.linalg (array.h, array_open.c). */
int luaopen_pd_core_array(lua_State *L);
int luaopen_pd_core_random(lua_State *L);  /* random.c: pd.random (random.h) */
int luaopen_pd_core_optim(lua_State *L);   /* optim.c: pd.optim's kernels */
int luaopen_pd_core_codec(lua_State *L);   /* codec.h */
int luaopen_pd_core_tubes(lua_State *L);   /* tubes.c: pd.tasks, tubes */
int luaopen_pd_core_cluster(lua_State *L); /* cluster.c: nodes, serve */
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

/* Message handler for lua_pcall that keeps an error structured, for a
 * caller that sends it on (a map task's error crosses back to the
 * coordinator, which adds task, node and pid): the message is the text
 * pdi_msghandler would start with (its own __tostring text for an object
 * that has one), the traceback is luaL_traceback's, without the message.
 * Stack: [err] -> [{message = text, traceback = "stack traceback:..."}] */
int pdi_msghandler_table(lua_State *L);

/* Call the function below nargs arguments with pdi_msghandler, and with
 * SIGINT turned into a Lua error while it runs.  Returns the lua_pcall
 * status.  Stack: [f, args...] -> [results...] or [errstring]. */
int pdi_docall(lua_State *L, int nargs, int nres);

/* The pd_pool of the pd.Pool at idx (pool.c), for other parts of the binding
 * (the cluster binds remote slots to it); raises when idx is not a pool or
 * the pool is closed.  The pool stays owned by its userdata.  Stack: +0 */
struct pd_pool;
struct pd_pool *pdi_pool_check(lua_State *L, int idx);

/* ---- classes ------------------------------------------------------------------
 * pdi_newclass makes the metatable `name` in the registry once (later calls
 * find it) and leaves it on the stack: __name = name (LuaJIT's
 * luaL_newmetatable does not set it), __index = a table of `methods` (when
 * not NULL), the metamethods in `meta` (when not NULL), and __gc and
 * __close = `close`, which must be safe to call twice (a handle closed by
 * its owner is collected later).  `close` NULL: the type holds nothing to
 * release; __close does nothing and there is no __gc (a finalizer, even an
 * empty one, keeps each dead object for one more collection cycle).  Returns 1 when the metatable was
 * made by this call, 0 when it existed.  Stack: [] -> [mt] */
int pdi_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                 const luaL_Reg *meta, lua_CFunction close);

/* ---- asserts -------------------------------------------------------------------
 * PDI_ASSERT(cond) states an invariant; PDI_STACK(L) remembers the stack top
 * and PDI_STACK_CHECK(L, d) checks that the function has since pushed d
 * values (negative: popped), which is the stack effect its comment states.
 * They run in the ASan build (PDLUA_SANITIZE) or with PDLUA_ASSERT, abort
 * with file and line when false, and compile to nothing in release builds. */
#if defined(PDLUA_SANITIZE) || defined(PDLUA_ASSERT)
#  define PDI_ASSERTS 1
void pdi_assert_fail(const char *what, const char *file, int line);
#  define PDI_ASSERT(c) ((c) ? (void)0 : pdi_assert_fail(#c, __FILE__, __LINE__))
#  define PDI_STACK(L) const int pdi_stack_top_ = lua_gettop(L)
#  define PDI_STACK_CHECK(L, d) PDI_ASSERT(lua_gettop(L) == pdi_stack_top_ + (d))
#else
#  define PDI_ASSERTS 0
#  define PDI_ASSERT(c) ((void)0)
#  define PDI_STACK(L) ((void)0)
#  define PDI_STACK_CHECK(L, d) ((void)0)
#endif

#endif
