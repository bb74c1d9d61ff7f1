/*
 * cluster.c (lua/): pd.core.cluster, the Lua face of core/cluster.c and
 * core/node.c, and the `pdlua serve`, `pdlua nodes`, `pdlua ctl` commands.
 *
 *   cl = core.cluster.new{secret_file=, secret=, tls_ca=, heartbeat=,
 *                         connect_timeout=, discover= ("" or "host:port")}
 *   cl:add(url) -> i          cl:wait(i, seconds) -> true | nil, msg, "refused"|"unreachable"
 *   cl:bind(pool)             remote slots go to this pd.Pool
 *   cl:nodes() -> { {url=, name=, cpus=, gpus=, busy=, held=, alive=, error=}, ... }
 *   cl:close()
 *   core.cluster.query(url, {secret_file=, tls_ca=, cpus=, gpus=, timeout=})
 *       -> info | nil, msg
 *   core.cluster.listen(seconds, {addr=, secret_file=}) -> { beacon, ... }
 *
 * Heartbeat default: env PDLUA_HEARTBEAT (seconds), else 1.
 */
#define _GNU_SOURCE
#include "command.h"

#include "pd/pd.h"
#include "pd/pdi.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define CLUSTER_MT "pd.Cluster"

static double env_heartbeat(void) {
  const char *e = getenv("PDLUA_HEARTBEAT");
  double v = e ? atof(e) : 0;
  return v > 0 ? v : 1.0;
}

/* Load the secret named by t.secret (a string) or t.secret_file into s.
 * Returns 1 when one was given, 0 when none, and raises on a bad file.
 * Stack: +0 */
static int opt_secret(lua_State *L, int t, pd_secret *s) {
  PDI_STACK(L);
  memset(s, 0, sizeof *s);
  lua_getfield(L, t, "secret");                    /* [secret] */
  if (lua_isstring(L, -1)) {
    size_t n;
    const char *p = lua_tolstring(L, -1, &n);
    if (pd_secret_set(s, p, n)) luaL_error(L, "secret: 1 to %d bytes", PD_SECRET_MAX);
    lua_pop(L, 1);                                 /* [] */
    PDI_STACK_CHECK(L, 0);
    return 1;
  }
  lua_pop(L, 1);                                   /* [] */
  lua_getfield(L, t, "secret_file");               /* [file] */
  const char *f = lua_tostring(L, -1);
  if (!f) f = getenv("PDLUA_SECRET_FILE");
  if (!f || !*f) {
    lua_pop(L, 1);                                 /* [] */
    PDI_STACK_CHECK(L, 0);
    return 0;
  }
  char err[512];
  if (pd_secret_load(f, s, err, sizeof err)) {
    lua_pushstring(L, err);
    lua_error(L);
  }
  lua_pop(L, 1);                                   /* [] */
  PDI_STACK_CHECK(L, 0);
  return 1;
}

/* t[k] as a string, or NULL.  Stack: +0 */
static const char *opt_str(lua_State *L, int t, const char *k) {
  PDI_STACK(L);
  lua_getfield(L, t, k);
  const char *v = lua_tostring(L, -1);             /* kept alive by t */
  lua_pop(L, 1);
  PDI_STACK_CHECK(L, 0);
  return v;
}

/* t[k] as a number, or d.  Stack: +0 */
static double opt_num(lua_State *L, int t, const char *k, double d) {
  PDI_STACK(L);
  lua_getfield(L, t, k);
  double v = lua_isnumber(L, -1) ? (double)lua_tonumber(L, -1) : d;
  lua_pop(L, 1);
  PDI_STACK_CHECK(L, 0);
  return v;
}

/* ---- pd.Cluster --------------------------------------------------------------------- */

typedef struct lcluster { pd_cluster *c; } lcluster;

static lcluster *check_cl(lua_State *L) {
  lcluster *lc = (lcluster *)luaL_checkudata(L, 1, CLUSTER_MT);
  if (!lc->c) luaL_error(L, "attempt to use a closed cluster");
  return lc;
}

/* core.cluster.new(opts) -> cluster.  Stack: [opts] -> [cl] */
static int cl_new(lua_State *L) {
  if (lua_isnoneornil(L, 1)) { lua_settop(L, 0); lua_newtable(L); }
  luaL_checktype(L, 1, LUA_TTABLE);
  PDI_STACK(L);
  lcluster *lc = (lcluster *)lua_newuserdatauv(L, sizeof *lc, 0);
  lc->c = NULL;
  luaL_setmetatable(L, CLUSTER_MT);
  pd_secret s;
  int has = opt_secret(L, 1, &s);
  pd_cluster_opts o;
  memset(&o, 0, sizeof o);
  o.secret = has ? &s : NULL;
  o.tls.ca = opt_str(L, 1, "tls_ca");
  o.heartbeat = opt_num(L, 1, "heartbeat", env_heartbeat());
  o.connect_timeout = opt_num(L, 1, "connect_timeout", 3.0);
  lua_getfield(L, 1, "discover");
  if (lua_isstring(L, -1)) o.discover = lua_tostring(L, -1);
  else if (lua_toboolean(L, -1)) {
    o.discover = getenv("PDLUA_DISCOVERY");
    if (!o.discover) o.discover = "";
  }
  lc->c = pd_cluster_new(&o);
  pd_secret_wipe(&s);
  lua_pop(L, 1);                                   /* [opts, .., cl] */
  if (!lc->c) return luaL_error(L, "cannot start the cluster bridge (discovery socket?)");
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* cl:add(url) -> index (1-based; the same URL twice gives the same).  [cl, url] -> [i] */
static int cl_add(lua_State *L) {
  lcluster *lc = check_cl(L);
  int i = pd_cluster_add(lc->c, luaL_checkstring(L, 2));
  if (i < 0) return luaL_error(L, "not enough memory");
  lua_pushinteger(L, i + 1);
  return 1;
}

/* cl:wait(i, seconds) -> true | nil, msg, "refused"|"unreachable".  [cl, i, s] -> [r...] */
static int cl_wait(lua_State *L) {
  lcluster *lc = check_cl(L);
  int i = (int)luaL_checkinteger(L, 2) - 1;
  char err[600];
  int rc = pd_cluster_wait(lc->c, i, luaL_optnumber(L, 3, 5), err, sizeof err);
  if (rc == 1) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, err);
  lua_pushstring(L, rc < 0 ? "refused" : "unreachable");
  return 3;
}

/* cl:bind(pool): remote slots are attached to pool from its own pump.  The
 * cluster must outlive the pool's pumping (pd.map closes pools first).
 * [cl, pool] -> [] */
static int cl_bind(lua_State *L) {
  lcluster *lc = check_cl(L);
  pd_pool *p = pdi_pool_check(L, 2);
  pd_pool_set_hook(p, pd_cluster_hook, lc->c, pd_cluster_wakefd(lc->c));
  return 0;
}

/* [] -> [info table] */
static void push_info(lua_State *L, const pd_node_info *n) {
  PDI_STACK(L);
  lua_createtable(L, 0, 10);
  lua_pushstring(L, n->url); lua_setfield(L, -2, "url");
  lua_pushstring(L, n->name[0] ? n->name : n->url); lua_setfield(L, -2, "name");
  lua_pushinteger(L, n->cpus); lua_setfield(L, -2, "cpus");
  lua_pushinteger(L, n->gpus); lua_setfield(L, -2, "gpus");
  lua_pushinteger(L, n->busy); lua_setfield(L, -2, "busy");
  lua_pushinteger(L, n->held); lua_setfield(L, -2, "held");
  lua_pushinteger(L, n->granted); lua_setfield(L, -2, "granted");
  lua_pushinteger(L, n->sessions); lua_setfield(L, -2, "coordinators");
  lua_pushboolean(L, n->alive); lua_setfield(L, -2, "alive");
  if (n->error[0]) { lua_pushstring(L, n->error); lua_setfield(L, -2, "error"); }
  PDI_STACK_CHECK(L, 1);
}

/* cl:nodes() -> list of info tables, as last heard.  [cl] -> [list] */
static int cl_nodes(lua_State *L) {
  lcluster *lc = check_cl(L);
  PDI_STACK(L);
  pd_node_info info[256];
  int n = pd_cluster_nodes(lc->c, info, 256);
  lua_createtable(L, n, 0);                        /* [cl, list] */
  for (int i = 0; i < n; i++) {
    push_info(L, &info[i]);                        /* [cl, list, info] */
    lua_rawseti(L, -2, i + 1);                     /* [cl, list] */
  }
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* cl:close() (also __gc, __close): links closed, bridge joined.  [cl] -> [] */
static int cl_close(lua_State *L) {
  lcluster *lc = (lcluster *)luaL_checkudata(L, 1, CLUSTER_MT);
  pd_cluster_free(lc->c);
  lc->c = NULL;
  return 0;
}

/* core.cluster.query(url, opts) -> info | nil, msg.  [url, opts] -> [r...] */
static int cl_query(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  if (lua_isnoneornil(L, 2)) { lua_settop(L, 1); lua_newtable(L); }
  luaL_checktype(L, 2, LUA_TTABLE);
  PDI_STACK(L);
  pd_secret s;
  int has = opt_secret(L, 2, &s);
  pd_tls tls = {NULL, NULL, opt_str(L, 2, "tls_ca")};
  int cpus = (int)opt_num(L, 2, "cpus", -1), gpus = (int)opt_num(L, 2, "gpus", -1);
  pd_node_info info;
  char err[600];
  int rc = pd_node_query(url, has ? &s : NULL, &tls, cpus, gpus, opt_num(L, 2, "timeout", 5),
                         &info, err, sizeof err);
  pd_secret_wipe(&s);
  if (rc) {
    lua_pushnil(L);
    lua_pushfstring(L, "node %s: %s", url, err);
    PDI_STACK_CHECK(L, 2);
    return 2;
  }
  push_info(L, &info);
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* core.cluster.listen(seconds, {addr=, secret_file=}) -> list of beacons
 * heard (each url once): {url=, name=, cpus=, gpus=, authenticated=} |
 * nil, msg.  Stack: [secs, opts] -> [list] or [nil, msg] */
static int cl_listen(lua_State *L) {
  double secs = luaL_checknumber(L, 1);
  if (lua_isnoneornil(L, 2)) { lua_settop(L, 1); lua_newtable(L); }
  PDI_STACK(L);
  pd_secret s;
  int has = opt_secret(L, 2, &s);
  const char *spec = opt_str(L, 2, "addr");
  if (!spec) spec = getenv("PDLUA_DISCOVERY");
  if (!spec || !*spec) spec = PD_BEACON_GROUP;
  struct sockaddr_in a;
  if (pd_beacon_addr(spec, &a)) return luaL_error(L, "bad beacon address '%s'", spec);
  int fd = pd_beacon_socket(&a, 1);
  if (fd < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot listen for beacons on %s: %s", spec, strerror(-fd));
    PDI_STACK_CHECK(L, 2);
    return 2;
  }
  lua_newtable(L);                                 /* [.., list] */
  int list = lua_gettop(L), k = 0;
  lua_newtable(L);                                 /* [.., list, seen] */
  double end = pd_now() + secs;
  for (;;) {
    double left = end - pd_now();
    if (left <= 0) break;
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0) continue;
    unsigned char buf[PD_BEACON_MAX + 16];
    ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r <= 0) continue;
    pd_beacon b;
    if (pd_beacon_decode(buf, (size_t)r, has ? &s : NULL, pdi_unix_now(), &b)) continue;
    if (has && !b.authenticated) continue;
    lua_getfield(L, -1, b.url);                    /* [.., list, seen, seen[url]] */
    int seen = lua_toboolean(L, -1);
    lua_pop(L, 1);                                 /* [.., list, seen] */
    if (seen) continue;
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, b.url);
    lua_createtable(L, 0, 5);                      /* [.., list, seen, beacon] */
    lua_pushstring(L, b.url); lua_setfield(L, -2, "url");
    lua_pushstring(L, b.name); lua_setfield(L, -2, "name");
    lua_pushinteger(L, b.cpus); lua_setfield(L, -2, "cpus");
    lua_pushinteger(L, b.gpus); lua_setfield(L, -2, "gpus");
    lua_pushboolean(L, b.authenticated); lua_setfield(L, -2, "authenticated");
    lua_rawseti(L, list, ++k);                     /* [.., list, seen] */
  }
  close(fd);
  pd_secret_wipe(&s);
  lua_pop(L, 1);                                   /* [.., list] */
  PDI_STACK_CHECK(L, 1);
  return 1;
}

static const luaL_Reg cl_methods[] = {
  {"add", cl_add}, {"wait", cl_wait}, {"bind", cl_bind}, {"nodes", cl_nodes},
  {"close", cl_close}, {NULL, NULL},
};

static const luaL_Reg cl_funcs[] = {
  {"new", cl_new}, {"query", cl_query}, {"listen", cl_listen}, {NULL, NULL},
};

/* Stack: [] -> [pd.core.cluster] */
int luaopen_pd_core_cluster(lua_State *L) {
  PDI_STACK(L);
  pdi_newclass(L, CLUSTER_MT, cl_methods, NULL, cl_close); /* [mt] */
  lua_pop(L, 1);                                   /* [] */
  luaL_newlib(L, cl_funcs);                        /* [cluster] */
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* ---- pdlua serve ---------------------------------------------------------------------- */

static volatile int serve_stop;                    /* `pdlua secret FILE`: a fresh 32-byte secret in a new file, mode 0600
 * (pd_secret_create), for `--secret-file` on every machine of the lab. */
int pdi_secret_main(int argc, char **argv) {
  if (argc != 3 || argv[2][0] == '-') {
    fprintf(stderr, "usage: pdlua secret FILE   (writes a fresh secret to a new file, mode 0600)\n");
    return 2;
  }
  char err[512];
  if (pd_secret_create(argv[2], err, sizeof err)) {
    fprintf(stderr, "pdlua secret: %s\n", err);
    return 1;
  }
  printf("pdlua secret: wrote a fresh secret to %s (mode 0600); copy it privately to each "
         "machine and give it with --secret-file\n", argv[2]);
  return 0;
}

/* set by SIGINT/SIGTERM only */
static void on_stop(int sig) { (void)sig; serve_stop = 1; }

static int want_value(int argc, char **argv, int *i, const char **out) {
  const char *a = argv[*i], *eq = strchr(a, '=');
  if (eq) { *out = eq + 1; return 0; }
  if (*i + 1 >= argc) {
    fprintf(stderr, "pdlua: option '%s' needs a value\n", a);
    return -1;
  }
  *out = argv[++*i];
  return 0;
}

static int flag_is(const char *a, const char *name) {
  size_t n = strlen(name);
  return !strncmp(a, name, n) && (a[n] == '\0' || a[n] == '=');
}

static int count_arg(const char *flag, const char *v, int *out) {
  char *end;
  long n = strtol(v, &end, 10);
  if (*end || end == v || n < 0 || n > 100000) {
    fprintf(stderr, "pdlua: %s wants a whole number >= 0, got '%s'\n", flag, v);
    return -1;
  }
  *out = (int)n;
  return 0;
}

static int load_secret_or_report(const char *file, pd_secret *s) {
  if (!file) file = getenv("PDLUA_SECRET_FILE");
  if (!file || !*file) return 0;
  char err[512];
  if (pd_secret_load(file, s, err, sizeof err)) {
    fprintf(stderr, "pdlua: %s\n", err);
    return -1;
  }
  return 1;
}

int pdi_serve_main(int argc, char **argv) {
  const char *listen = NULL, *secret_file = NULL, *name = NULL, *cert = NULL, *key = NULL;
  const char *beacon = getenv("PDLUA_DISCOVERY"), *v;
  int cpus = -1, gpus = 0, announce = 0, mem_mib = 0;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (flag_is(a, "--cpus")) { if (want_value(argc, argv, &i, &v) || count_arg("--cpus", v, &cpus)) return 2; }
    else if (flag_is(a, "--gpus")) { if (want_value(argc, argv, &i, &v) || count_arg("--gpus", v, &gpus)) return 2; }
    else if (flag_is(a, "--memory")) { if (want_value(argc, argv, &i, &v) || count_arg("--memory", v, &mem_mib)) return 2; }
    else if (flag_is(a, "--listen")) { if (want_value(argc, argv, &i, &listen)) return 2; }
    else if (flag_is(a, "--secret-file")) { if (want_value(argc, argv, &i, &secret_file)) return 2; }
    else if (flag_is(a, "--name")) { if (want_value(argc, argv, &i, &name)) return 2; }
    else if (flag_is(a, "--tls-cert")) { if (want_value(argc, argv, &i, &cert)) return 2; }
    else if (flag_is(a, "--tls-key")) { if (want_value(argc, argv, &i, &key)) return 2; }
    else if (flag_is(a, "--beacon")) { if (want_value(argc, argv, &i, &beacon)) return 2; }
    else if (!strcmp(a, "--announce")) announce = 1;
    else {
      int help = !strcmp(a, "--help") || !strcmp(a, "-h");
      if (!help) fprintf(stderr, "pdlua serve: unknown option '%s'\n", a);
      fprintf(help ? stdout : stderr,
              "usage: pdlua serve [--cpus N] [--gpus N] [--listen URL] [--secret-file F]\n"
              "                   [--announce] [--name NAME] [--tls-cert F --tls-key F]\n"
              "                   [--beacon HOST:PORT] [--memory MiB]\n"
              "Lends this machine's CPUs to pdlua jobs (docs/operations.md).  Without a\n"
              "secret it listens on loopback only.  Env: PDLUA_HEARTBEAT, PDLUA_SECRET_FILE,\n"
              "PDLUA_DISCOVERY.\n");
      return help ? 0 : 2;
    }
  }
  pd_secret s;
  memset(&s, 0, sizeof s);
  int has = load_secret_or_report(secret_file, &s);
  if (has < 0) return 2;
  if (!listen) listen = has ? "tcp://0.0.0.0:27183" : "tcp://127.0.0.1:27183";
  if (cpus < 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cpus = n > 0 ? (int)n : 1;
  }
  char host[128];
  if (!name) {
    if (gethostname(host, sizeof host)) snprintf(host, sizeof host, "node");
    host[sizeof host - 1] = '\0';
    name = host;
  }
  const char *exe = pdi_exe_path();
  if (!exe) {
    fprintf(stderr, "pdlua serve: cannot find the pdlua executable to start workers\n");
    return 1;
  }
  char *wargv[] = {(char *)exe, "-e", "require('pd.worker')", NULL};
  pd_node_opts o;
  memset(&o, 0, sizeof o);
  o.listen = listen;
  o.name = name;
  o.cpus = cpus;
  o.gpus = gpus;
  o.secret = has ? &s : NULL;
  o.tls.cert = cert;
  o.tls.key = key;
  o.worker_argv = wargv;
  o.memory = (unsigned long long)mem_mib << 20;
  if (!mem_mib) {
    /* the default, as for local workers: a fair share of what the machine
     * has free, so that a runaway task of someone else's job fails with
     * "out of memory" long before the owner's desktop swaps */
    FILE *mf = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    while (mf && fgets(line, sizeof line, mf))
      if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    if (mf) fclose(mf);
    if (kb && cpus > 0) o.memory = (unsigned long long)((double)kb * 1024 * 0.9 / cpus);
  }
  o.announce = announce;
  o.beacon = beacon;
  o.heartbeat = env_heartbeat();
  o.stop = &serve_stop;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  int rc = pd_node_run(&o);
  pd_secret_wipe(&s);
  return rc ? 1 : 0;
}
