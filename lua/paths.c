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
#include "pdlua.h"

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
