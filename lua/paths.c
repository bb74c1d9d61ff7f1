/*
 * paths.c: where pdlua finds itself, its stdlib and its native module.
 *
 * Layouts understood, relative to the executable's directory D:
 *   build tree:  D/pdlua, D/stdlib/pd/init.lua, D/lib/pd/core.so
 *   installed:   D/pdlua, D/../share/pdlua/stdlib/..., D/../lib/pdlua/pd/core.so
 * When pd/core.so is loaded by plain lua5.4, D is found from the .so's own
 * path (D/lib/pd/core.so or D/../lib/pdlua/pd/core.so).
 */
#define _GNU_SOURCE
#include "binding.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int pdi_is_pdlua = 0;

static char exe_dir[PATH_MAX];
static char exe_path[PATH_MAX];
static char lpath[4 * PATH_MAX + 64];
static char lcpath[2 * PATH_MAX + 32];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void strip_suffix(char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  if (n >= m && !strcmp(s + n - m, suffix)) s[n - m] = '\0';
}

static void find_self(void) {
  char buf[PATH_MAX];
  exe_dir[0] = exe_path[0] = '\0';
  if (pdi_is_pdlua) {
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return;
    buf[n] = '\0';
  } else {
    Dl_info info;                /* the shared object this code lives in */
    if (!dladdr((void *)find_self, &info) || !info.dli_fname) return;
    if (!realpath(info.dli_fname, buf)) return;
    /* .../D/lib/pd/core.so or .../lib/pdlua/pd/core.so -> D/pdlua */
    char *slash = strrchr(buf, '/');
    if (!slash) return;
    *slash = '\0';                                   /* D/lib/pd */
    strip_suffix(buf, "/pd");                        /* D/lib or X/lib/pdlua */
    strip_suffix(buf, "/pdlua");
    if (!strcmp(buf + (strlen(buf) >= 4 ? strlen(buf) - 4 : 0), "/lib")) {
      buf[strlen(buf) - 4] = '\0';                   /* D, or X (then X/bin) */
      char probe[PATH_MAX];
      snprintf(probe, sizeof probe, "%s/pdlua", buf);
      if (access(probe, X_OK) != 0) {
        size_t l = strlen(buf);
        if (l + 4 < sizeof buf) strcat(buf, "/bin");
      }
    }
    size_t l = strlen(buf);
    if (l + 7 >= sizeof buf) return;
    strcat(buf, "/pdlua");
  }
  snprintf(exe_path, sizeof exe_path, "%s", buf);
  char *slash = strrchr(buf, '/');
  if (slash) *slash = '\0';
  snprintf(exe_dir, sizeof exe_dir, "%s", buf);

  const char *d = exe_dir;
  snprintf(lpath, sizeof lpath,
           "%s/stdlib/?.lua;%s/stdlib/?/init.lua;"
           "%s/../share/pdlua/stdlib/?.lua;%s/../share/pdlua/stdlib/?/init.lua",
           d, d, d, d);
  snprintf(lcpath, sizeof lcpath, "%s/lib/?.so;%s/../lib/pdlua/?.so", d, d);
}

const char *pdi_exe_dir(void) {
  pthread_once(&once, find_self);
  return exe_dir[0] ? exe_dir : NULL;
}

const char *pdi_exe_path(void) {
  pthread_once(&once, find_self);
  return exe_path[0] ? exe_path : NULL;
}

const char *pdi_lua_path(void) {
  pthread_once(&once, find_self);
  return lpath;
}

const char *pdi_lua_cpath(void) {
  pthread_once(&once, find_self);
  return lcpath;
}

/* ---- compiled stdlib ---------------------------------------------------------
 * The build compiles every stdlib module to bytecode (scripts/stdlib_bc.lua:
 * D/bc/pd/map.luac for D/stdlib/pd/map.lua, chunk names those of the sources,
 * so tracebacks read the same).  Parsing pd.map alone took 1.2 ms of a cold
 * pd.map's 4; loading its bytecode takes a tenth of that.  This searcher,
 * placed before Lua's own, loads the bytecode of a pd module when it is at
 * least as new as its source, and leaves everything else (an edited source
 * not yet rebuilt, another module, plain lua5.4) to the usual searchers. */
#include <sys/stat.h>

static int newer_or_same(const char *bc, const char *src) {
  struct stat a, b;
  if (stat(bc, &a) != 0 || stat(src, &b) != 0) return 0;
  if (a.st_mtim.tv_sec != b.st_mtim.tv_sec) return a.st_mtim.tv_sec > b.st_mtim.tv_sec;
  return a.st_mtim.tv_nsec >= b.st_mtim.tv_nsec;
}

/* package.searchers entry: [name] -> [loader, path] | [] (not ours: the
 * next searcher says why a module is missing) */
static int bc_searcher(lua_State *L) {
  PDI_STACK(L);
  const char *name = luaL_checkstring(L, 1);
  if (strcmp(name, "pd") != 0 && strncmp(name, "pd.", 3) != 0) return 0;
  pthread_once(&once, find_self);
  if (!exe_dir[0] || strlen(name) > 200) return 0;
  char rel[256], src[PATH_MAX + 300], bc[PATH_MAX + 300];
  snprintf(rel, sizeof rel, "%s", name);
  for (char *p = rel; *p; p++)
    if (*p == '.') *p = '/';
  for (int k = 0; k < 2; k++) {
    const char *tail = k ? "/init" : "";           /* pd/x.lua, then pd/x/init.lua */
    snprintf(src, sizeof src, "%s/stdlib/%s%s.lua", exe_dir, rel, tail);
    snprintf(bc, sizeof bc, "%s/bc/%s%s.luac", exe_dir, rel, tail);
    if (!newer_or_same(bc, src)) continue;
    if (luaL_loadfilex(L, bc, "b") != LUA_OK) {    /* stale format, damaged: use the source */
      lua_pop(L, 1);                               /* [] */
      PDI_STACK_CHECK(L, 0);
      return 0;
    }
    lua_pushstring(L, src);                        /* [loader, path] */
    PDI_STACK_CHECK(L, 2);
    return 2;
  }
  return 0;
}

/* Put bc_searcher second in package.searchers (package.loaders in LuaJIT),
 * after the preload searcher.  Stack: +0 */
void pdi_add_bc_searcher(lua_State *L) {
  PDI_STACK(L);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchers");                /* [package, searchers] */
  if (!lua_istable(L, -1)) {                       /* LuaJIT: package.loaders */
    lua_pop(L, 1);
    lua_getfield(L, -1, "loaders");
  }
  if (lua_istable(L, -1)) {
    int n = (int)lua_rawlen(L, -1);
    for (int i = n; i >= 2; i--) {                 /* make room at 2, after preload */
      lua_rawgeti(L, -1, i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, bc_searcher);
    lua_rawseti(L, -2, 2);
  }
  lua_pop(L, 2);                                   /* [] */
  PDI_STACK_CHECK(L, 0);
}
