/*
 * gpu.c: pd.core.gpu, the thin native side of pd.gpu (stdlib/pd/gpu.lua).
 *
 * The world (no driver, no NVRTC, a compile error) answers nil, reason;
 * misuse (wrong argument types) raises.
 */
#include "pdlua.h"
#include "pdgpu.h"

#include <stdlib.h>
#include <string.h>

/* available() -> true | false, reason.  Stack: [] -> [b, reason?] */
static int gpu_available(lua_State *L) {
  char why[512];
  if (pdgpu_probe(why, sizeof why) > 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  lua_pushstring(L, why);
  return 2;
}

/* devices() -> { {name=, memory=, cc=, sms=}, ... } [, reason when empty] */
static int gpu_devices(lua_State *L) {
  char why[512];
  int n = pdgpu_probe(why, sizeof why);
  lua_createtable(L, n, 0);                              /* [list] */
  for (int i = 0; i < n; i++) {
    pdgpu_device d;
    if (pdgpu_device_info(i, &d, why, sizeof why) != 0) {
      lua_pushnil(L);
      lua_pushstring(L, why);
      return 2;
    }
    lua_createtable(L, 0, 5);                            /* [list, dev] */
    lua_pushstring(L, d.name);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, (lua_Integer)d.memory);
    lua_setfield(L, -2, "memory");
    lua_pushfstring(L, "%d.%d", d.cc_major, d.cc_minor);
    lua_setfield(L, -2, "cc");
    lua_pushfstring(L, "%d%d", d.cc_major, d.cc_minor);
    lua_setfield(L, -2, "arch");                         /* "90": for sm_90 */
    lua_pushinteger(L, d.sms);
    lua_setfield(L, -2, "sms");
    lua_pushinteger(L, i);
    lua_setfield(L, -2, "index");
    lua_rawseti(L, -2, i + 1);                           /* [list] */
  }
  if (n == 0) {
    lua_pushstring(L, why);
    return 2;
  }
  return 1;
}

/* nvrtc() -> "13.0", path | nil, reason */
static int gpu_nvrtc(lua_State *L) {
  char why[512];
  const char *path = NULL;
  int v = pdgpu_nvrtc(&path, why, sizeof why);
  if (!v) {
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
  }
  lua_pushfstring(L, "%d.%d", v / 1000, (v % 1000) / 10);
  lua_pushstring(L, path);
  return 2;
}

/* compile(src, arch, options) -> image | nil, log.  options: list of
 * strings.  Stack: [src, arch, opts] -> [image] or [nil, log] */
static int gpu_compile(lua_State *L) {
  size_t n;
  const char *src = luaL_checklstring(L, 1, &n);
  const char *arch = luaL_checkstring(L, 2);
  int nopts = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    nopts = (int)lua_rawlen(L, 3);
  }
  if (nopts > 256) return luaL_argerror(L, 3, "too many options (256 at most)");
  const char *opts[256];
  for (int i = 0; i < nopts; i++) {
    lua_rawgeti(L, 3, i + 1);                            /* kept on the stack */
    if (lua_type(L, -1) != LUA_TSTRING)
      return luaL_argerror(L, 3, lua_pushfstring(L, "option %d is not a string", i + 1));
    opts[i] = lua_tostring(L, -1);
  }
  char *out = NULL, *log = NULL;
  size_t outlen = 0;
  int rc = pdgpu_compile(src, n, "pdlua_kernel.cu", arch, opts, nopts, &out, &outlen, &log);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, log && *log ? log : "compilation failed");
    free(log);
    return 2;
  }
  lua_pushlstring(L, out, outlen);
  if (log && *log) lua_pushstring(L, log);               /* warnings */
  else lua_pushnil(L);
  free(out);
  free(log);
  return 2;
}

static const luaL_Reg gpu_funcs[] = {
  {"available", gpu_available},
  {"devices", gpu_devices},
  {"nvrtc", gpu_nvrtc},
  {"compile", gpu_compile},
  {NULL, NULL},
};

/* Stack: [] -> [pd.core.gpu] */
int luaopen_pd_core_gpu(lua_State *L) {
  luaL_newlib(L, gpu_funcs);
  lua_pushinteger(L, PDGPU_API_VERSION);
  lua_setfield(L, -2, "api_version");
  return 1;
}
