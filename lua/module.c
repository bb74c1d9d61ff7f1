/*
 * module.c: luaopen_pd_core, the native side of require "pd".
 *
 * pd.core is one C module: linked into the pdlua executable (preloaded) and
 * also built as lib/pd/core.so for plain lua5.4.  Opening it registers the
 * other native parts in package.preload as "pd.core.<part>", so the stdlib
 * requires them lazily and one file carries all of them.
 */
#include "binding.h"
#include "array.h"

#include "codec.h"
#include "pd/pd.h"

/* Native parts: each adds one line here (and its opener to binding.h). */
static const luaL_Reg natives[] = {
  {"pd.core.map", luaopen_pd_core_map},
  {"pd.core.gpu", luaopen_pd_core_gpu},
  {"pd.core.array", luaopen_pd_core_array},
  {"pd.core.random", luaopen_pd_core_random},
  {"pd.core.optim", luaopen_pd_core_optim},
  {"pd.core.codec", luaopen_pd_core_codec},
  {"pd.core.cluster", luaopen_pd_core_cluster},  /* cluster.c: nodes */
  {"pd.core.tubes", luaopen_pd_core_tubes},
  {NULL, NULL},
};

/* pd.core.options() -> table: the flags pdlua was started with (cpus, gpus,
 * nodes, seed, secret_file, discover, progress, json); empty under plain
 * lua5.4.  A fresh copy each call.  Stack: [] -> [t] */
static int core_options(lua_State *L) {
  PDI_STACK(L);
  lua_newtable(L);                                    /* [t] */
  lua_getfield(L, LUA_REGISTRYINDEX, "pdlua.options"); /* [t, opts|nil] */
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {                         /* [t, opts, k, v] */
      lua_pushvalue(L, -2);                           /* [t, opts, k, v, k] */
      lua_insert(L, -2);                              /* [t, opts, k, k, v] */
      lua_settable(L, -5);                            /* [t, opts, k] */
    }
  }
  lua_pop(L, 1);                                      /* [t] */
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* pd.core.exe() -> path of the pdlua executable, or nil.  Stack: [] -> [s] */
static int core_exe(lua_State *L) {
  const char *p = pdi_exe_path();
  if (p) lua_pushstring(L, p);
  else lua_pushnil(L);
  return 1;
}

/* pd.core.now() -> monotonic seconds (float).  Stack: [] -> [n] */
static int core_now(lua_State *L) {
  lua_pushnumber(L, pd_now());
  return 1;
}

/* pd.core.sha256(s) -> 64 hex digits.  Stack: [s] -> [hex] */
static int core_sha256(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  char hex[65];
  pd_sha256_hex(s, n, hex);
  lua_pushlstring(L, hex, 64);
  return 1;
}

/* pd.core.replace_file(path, s) / pd.core.append_file(path, s) -> true, or
 * nil and a reason naming the file: durable writes (pd_file_replace and
 * pd_file_append in pd.h: checked writes, fsync, rename over the old file).
 * Stack: [path, s] -> [path, s, true] or [path, s, nil, msg] */
static int file_result(lua_State *L, int rc, const char *err) {
  if (rc == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, err);
  return 2;
}

static int core_replace_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  char err[512];
  return file_result(L, pd_file_replace(path, s, n, err, sizeof err), err);
}

static int core_append_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  char err[512];
  return file_result(L, pd_file_append(path, s, n, err, sizeof err), err);
}

static const luaL_Reg core_funcs[] = {
  {"replace_file", core_replace_file},
  {"append_file", core_append_file},
  {"options", core_options},
  {"exe", core_exe},
  {"now", core_now},
  {"sha256", core_sha256},
  {NULL, NULL},
};

/* Stack: [] -> [pd.core] */
int luaopen_pd_core(lua_State *L) {
  luaL_checkversion(L);
  PDI_STACK(L);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");                     /* [package, preload] */
  for (const luaL_Reg *r = natives; r->name; r++) {
    lua_pushcfunction(L, r->func);
    lua_setfield(L, -2, r->name);
  }
  lua_pop(L, 2);                                      /* [] */
  luaL_newlib(L, core_funcs);                         /* [core] */
  lua_pushliteral(L, PDLUA_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushliteral(L, PDLUA_VM_NAME);
  lua_setfield(L, -2, "vm");
#ifdef PDLUA_SANITIZE
  lua_pushboolean(L, 1);                 /* built with ASan+UBSan: specs skip */
  lua_setfield(L, -2, "sanitized");      /* what it forbids (plain lua5.4 .so) */
#endif
  lua_pushstring(L, pdi_lua_path());
  lua_setfield(L, -2, "path");
  lua_pushstring(L, pdi_lua_cpath());
  lua_setfield(L, -2, "cpath");
  PDI_STACK_CHECK(L, 1);
  return 1;
}
