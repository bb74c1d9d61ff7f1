/*
 * probe.c: what pd.map asks of the machine and its processes, from /proc
 * and sysconf (Linux): cpus online and available memory (to size a pool),
 * a process's resident memory and whether it still runs (the specs and
 * the benches watch workers with them), isatty (progress display) and
 * getpid.  Each call reads afresh; none keeps state or raises for what
 * the system does not say (it answers nothing, 0 or false).
 */
#include "taskvalue.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* core.map.isatty([fd = 2]) -> boolean */
static int m_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 2)));
  return 1;
}

/* core.map.getpid() -> this process's pid */
static int m_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

/* core.map.machine() -> cpus online, MemAvailable bytes (0 if unknown). */
static int m_machine(lua_State *L) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? n : 1);
  double avail = 0;
  FILE *f = fopen("/proc/meminfo", "r");
  if (f) {
    char line[256];
    while (fgets(line, sizeof line, f)) {
      unsigned long long kb;
      if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) { avail = (double)kb * 1024; break; }
    }
    fclose(f);
  }
  lua_pushnumber(L, avail);
  return 2;
}

/* core.map.rss(pid) -> resident bytes of a process (from /proc), or nil. */
static int m_rss(lua_State *L) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", (int)luaL_optinteger(L, 1, getpid()));
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[256];
  double rss = -1, hwm = -1;
  while (fgets(line, sizeof line, f)) {
    unsigned long long kb;
    if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) rss = (double)kb * 1024;
    if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) hwm = (double)kb * 1024;
  }
  fclose(f);
  if (rss < 0) return 0;
  lua_pushnumber(L, rss);
  lua_pushnumber(L, hwm);
  return 2;
}

/* core.map.alive(pid) -> true while the process exists (and is not a zombie). */
static int m_alive(lua_State *L) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)luaL_checkinteger(L, 1));
  FILE *f = fopen(path, "r");
  int alive = 0;
  if (f) {
    if (fgets(line, sizeof line, f)) {
      char *rp = strrchr(line, ')');
      alive = rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';
    }
    fclose(f);
  }
  lua_pushboolean(L, alive);
  return 1;
}
static const luaL_Reg probe_funcs[] = {
  {"isatty", m_isatty}, {"getpid", m_getpid}, {"machine", m_machine},
  {"rss", m_rss}, {"alive", m_alive},
  {NULL, NULL},
};

void pdi_map_open_probe(lua_State *L) {
  luaL_setfuncs(L, probe_funcs, 0);
}
