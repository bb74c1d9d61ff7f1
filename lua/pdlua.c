/*
 * pdlua.c: the pdlua command (shaped like lua.c).
 *
 *   pdlua run SCRIPT [ARGS...] [--cpus N] ...   run a job script
 *   pdlua SCRIPT [ARGS...]                       the same, as `lua` would
 *   pdlua -e CODE                                run a chunk
 *   pdlua [repl]                                 interactive REPL
 *
 * Lua is entered only through pdi_docall (lua_pcall with a traceback
 * handler).  Flags that belong to pdlua are recognised before or after
 * SCRIPT, up to a `--`; everything else after SCRIPT reaches the script as
 * `arg` and `...`.  The run flags are kept in the registry (see
 * pd.core.options()) and become pd.init's defaults.
 */
#define _GNU_SOURCE
#include "command.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROGNAME "pdlua"

/* Set by main: the running image is the pdlua executable (not lua5.4
 * with pd/core.so loaded), which changes how pdi_exe_dir finds itself. */
extern int pdi_is_pdlua;

/* ---- reporting ----------------------------------------------------------- */

static void l_message(const char *msg) {
  fprintf(stderr, "%s: %s\n", PROGNAME, msg);
  fflush(stderr);
}

/* Print the error string on the stack top (if status is an error) and pop.
 * Stack: [err] -> [] on an error, +0 otherwise. */
static int report(lua_State *L, int status) {
  PDI_STACK(L);
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    l_message(msg ? msg : "(error with no message)");
    lua_pop(L, 1);
  }
  PDI_STACK_CHECK(L, status != LUA_OK ? -1 : 0);
  return status;
}

/* ---- options ------------------------------------------------------------- */

typedef struct opts {
  const char *cpus, *gpus, *nodes, *secret_file, *seed, *tls_ca;
  int discover, no_progress, json;
} opts;

static void print_usage(FILE *f) {
  fprintf(f,
    "usage: pdlua run SCRIPT [ARGS...] [--cpus N] [--gpus N] [--nodes URL,...]\n"
    "                 [--secret-file F] [--discover] [--seed S] [--no-progress] [--json]\n"
    "       pdlua SCRIPT [ARGS...]          same as run\n"
    "       pdlua [repl] [run flags]        interactive REPL (also when no script is given)\n"
    "       pdlua -e CODE [SCRIPT ...]      run CODE, then SCRIPT if any\n"
    "       pdlua serve [--cpus N] [--gpus N] [--listen URL] [--secret-file F] [--announce]\n"
    "                   [--name NAME] [--tls-cert F --tls-key F] [--beacon HOST:PORT]\n"
    "       pdlua secret FILE               write a fresh secret to a new file (mode 0600)\n"
    "       pdlua nodes [--nodes URL,... | --discover] [--secret-file F] [--tls-ca F]\n"
    "       pdlua ctl --node URL set --cpus N [--gpus N] [--secret-file F] [--tls-ca F]\n"
    "       pdlua --version | --help | --paths\n"
    "\n"
    "Flags go before or after SCRIPT; use -- to pass the rest to the script verbatim.\n"
    "`pdlua --paths` prints LUA_PATH and LUA_CPATH for using require \"pd\" from lua5.4.\n");
}

/* Is s a run flag taking a value?  Returns a pointer to the slot, or NULL. */
static const char **value_flag(opts *o, const char *s) {
  if (!strcmp(s, "--cpus")) return &o->cpus;
  if (!strcmp(s, "--gpus")) return &o->gpus;
  if (!strcmp(s, "--nodes")) return &o->nodes;
  if (!strcmp(s, "--secret-file")) return &o->secret_file;
  if (!strcmp(s, "--seed")) return &o->seed;
  if (!strcmp(s, "--tls-ca")) return &o->tls_ca;
  return NULL;
}

static int *bool_flag(opts *o, const char *s) {
  if (!strcmp(s, "--discover")) return &o->discover;
  if (!strcmp(s, "--no-progress")) return &o->no_progress;
  if (!strcmp(s, "--json")) return &o->json;
  return NULL;
}

/* Try to consume argv[*i] (and its value) as a run flag.  Returns 1 when
 * consumed, 0 when not a run flag, -1 on a malformed flag (reported). */
static int take_flag(opts *o, int argc, char **argv, int *i) {
  const char *a = argv[*i];
  char name[32];
  const char *eq = strchr(a, '=');
  if (strncmp(a, "--", 2) != 0) return 0;
  size_t n = eq ? (size_t)(eq - a) : strlen(a);
  if (n >= sizeof name) return 0;
  memcpy(name, a, n);
  name[n] = '\0';
  const char **slot = value_flag(o, name);
  if (slot) {
    if (eq) {
      *slot = eq + 1;
    } else if (*i + 1 < argc) {
      *slot = argv[++*i];
    } else {
      fprintf(stderr, "%s: option '%s' needs a value\n", PROGNAME, name);
      return -1;
    }
    return 1;
  }
  int *b = bool_flag(o, name);
  if (b && !eq) {
    *b = 1;
    return 1;
  }
  return 0;
}

static int check_count(const char *flag, const char *v) {
  if (!v) return 0;
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || *end || end == v || n < 0 || n > 100000) {
    fprintf(stderr, "%s: %s wants a whole number >= 0, got '%s'\n", PROGNAME, flag, v);
    return -1;
  }
  return 0;
}

/* registry["pdlua.options"] = { cpus=, gpus=, nodes={...}, ... }.
 * Stack: +0 */
static void store_options(lua_State *L, const opts *o) {
  PDI_STACK(L);
  lua_newtable(L);                                 /* [t] */
  if (o->cpus) { lua_pushinteger(L, atol(o->cpus)); lua_setfield(L, -2, "cpus"); }
  if (o->gpus) { lua_pushinteger(L, atol(o->gpus)); lua_setfield(L, -2, "gpus"); }
  if (o->seed) {
    lua_pushstring(L, o->seed);                    /* [t, s] */
    if (lua_stringtonumber(L, o->seed)) lua_remove(L, -2); /* numeric seed: [t, n] */
    lua_setfield(L, -2, "seed");
  }
  if (o->secret_file) { lua_pushstring(L, o->secret_file); lua_setfield(L, -2, "secret_file"); }
  if (o->tls_ca) { lua_pushstring(L, o->tls_ca); lua_setfield(L, -2, "tls_ca"); }
  if (o->nodes) {                                  /* "a,b,c" -> {"a","b","c"} */
    lua_newtable(L);                               /* [t, nodes] */
    const char *p = o->nodes;
    int k = 0;
    while (*p) {
      const char *c = strchr(p, ',');
      size_t len = c ? (size_t)(c - p) : strlen(p);
      if (len) { lua_pushlstring(L, p, len); lua_rawseti(L, -2, ++k); }
      p += len + (c ? 1 : 0);
    }
    lua_setfield(L, -2, "nodes");                  /* [t] */
  }
  if (o->discover) { lua_pushboolean(L, 1); lua_setfield(L, -2, "discover"); }
  if (o->no_progress) { lua_pushboolean(L, 0); lua_setfield(L, -2, "progress"); }
  if (o->json) { lua_pushboolean(L, 1); lua_setfield(L, -2, "json"); }
  lua_setfield(L, LUA_REGISTRYINDEX, "pdlua.options"); /* [] */
  PDI_STACK_CHECK(L, 0);
}

/* ---- the state ------------------------------------------------------------- */

/* package[field] = ours .. ";" .. package[field].  Stack: +0 */
static void prepend_path(lua_State *L, const char *field, const char *ours) {
  PDI_STACK(L);
  lua_getglobal(L, "package");                     /* [package] */
  lua_getfield(L, -1, field);                      /* [package, old] */
  lua_pushfstring(L, "%s;%s", ours, lua_tostring(L, -1)); /* [package, old, new] */
  lua_setfield(L, -3, field);                      /* [package, old] */
  lua_pop(L, 2);                                   /* [] */
  PDI_STACK_CHECK(L, 0);
}

/* The standard libraries, pd.core preloaded, the search paths.  Stack: +0 */
static void open_state(lua_State *L) {
  PDI_STACK(L);
  luaL_openlibs(L);
  /* pd.core lives inside this executable: preload it, no .so needed. */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");                  /* [package, preload] */
  lua_pushcfunction(L, luaopen_pd_core);
  lua_setfield(L, -2, "pd.core");
  lua_pop(L, 2);
  prepend_path(L, "path", pdi_lua_path());
  prepend_path(L, "cpath", pdi_lua_cpath());
  pdi_add_bc_searcher(L);
  PDI_STACK_CHECK(L, 0);
}

/* arg = { [-n..-1] = the words before SCRIPT, [0] = SCRIPT,
 *         [1..] = the script's own arguments (pdlua's flags taken out) }.
 * Stack: +0 */
static void create_arg_table(lua_State *L, char **argv, int script, char **sargs, int nsargs) {
  PDI_STACK(L);
  lua_createtable(L, nsargs, script + 1);          /* [arg] */
  for (int i = 0; i <= script; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  for (int i = 0; i < nsargs; i++) {
    lua_pushstring(L, sargs[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setglobal(L, "arg");                         /* [] */
  PDI_STACK_CHECK(L, 0);
}

/* Run the chunk that a load with this status left, or report its error.
 * Stack: [f] or [err] -> [] */
static int dochunk(lua_State *L, int status) {
  PDI_STACK(L);
  if (status == LUA_OK) status = pdi_docall(L, 0, 0);
  status = report(L, status);
  PDI_STACK_CHECK(L, -1);
  return status;
}

/* Stack: +0 */
static int dostring(lua_State *L, const char *s) {
  return dochunk(L, luaL_loadbuffer(L, s, strlen(s), "=(command line)"));
}

/* Run the file fname (NULL or "-": stdin) with args as `...`; an error is
 * reported.  Stack: +0 */
static int run_script(lua_State *L, const char *fname, char **args, int nargs) {
  PDI_STACK(L);
  if (fname && !strcmp(fname, "-")) fname = NULL;  /* stdin */
  int status = luaL_loadfile(L, fname);
  if (status == LUA_OK) {
    luaL_checkstack(L, nargs + 1, "too many arguments to script");
    for (int i = 0; i < nargs; i++) lua_pushstring(L, args[i]);
    status = pdi_docall(L, nargs, 0);
  }
  status = report(L, status);
  PDI_STACK_CHECK(L, 0);
  return status;
}

/* ---- main ---------------------------------------------------------------------- */

typedef struct cli cli;

/* The subcommands: `pdlua WORD ...`.  With no WORD (or a script, -e, a
 * flag) the command is "run".  `flags`: the run flags (--cpus ...) are
 * parsed here and the entry gets the Lua state; otherwise the entry parses
 * argv itself.  Adding a subcommand is one line here, its entry, and its
 * usage line in print_usage. */
typedef struct subcommand {
  const char *name;
  int flags;                   /* run flags parsed here (run, repl) */
  int (*entry)(lua_State *L);  /* in the Lua state, through lua_pcall; NULL: main */
  int (*main)(int argc, char **argv);  /* instead of a state: own parser */
} subcommand;

struct cli {
  int argc;
  char **argv;
  opts o;
  const subcommand *cmd;       /* what `pdlua WORD` named (run by default) */
  const char *exec[64];        /* -e chunks in order */
  int nexec;
  int script;                  /* index of SCRIPT in argv, 0 if none */
  char **sargs;                /* script arguments (flags removed) */
  int nsargs;
  int version, help, paths;
  int rc;                      /* exit status an entry chose (nodes, ctl) */
};

static int pmain(lua_State *L);
static int pmain_admin(lua_State *L);

static const subcommand commands[] = {
  {"run", 1, pmain, NULL},              /* a script, -e chunks, or the REPL */
  {"repl", 1, pmain, NULL},             /* the REPL, even with stdin not a tty */
  {"serve", 0, NULL, pdi_serve_main},   /* lend this machine (cluster.c) */
  {"secret", 0, NULL, pdi_secret_main}, /* write a fresh secret (cluster.c) */
  {"nodes", 0, pmain_admin, NULL},      /* pd.cluster.cli("nodes", args) */
  {"ctl", 0, pmain_admin, NULL},        /* pd.cluster.cli("ctl", args) */
  {NULL, 0, NULL, NULL},
};

static int parse(cli *c) {
  int i = 1;
  c->cmd = &commands[0];                           /* run */
  if (i < c->argc)
    for (const subcommand *k = commands; k->name; k++)
      if (!strcmp(c->argv[i], k->name)) {
        c->cmd = k;
        if (!k->flags) return 0;                   /* it parses its own */
        i++;
        break;
      }
  c->sargs = calloc((size_t)c->argc + 1, sizeof *c->sargs);
  if (!c->sargs) return -1;
  int verbatim = 0;
  for (; i < c->argc; i++) {
    char *a = c->argv[i];
    if (!verbatim && !strcmp(a, "--")) {
      verbatim = 1;
      continue;
    }
    if (!verbatim) {
      int t = take_flag(&c->o, c->argc, c->argv, &i);
      if (t < 0) return -1;
      if (t) continue;
    }
    if (c->script) {                               /* a script argument */
      c->sargs[c->nsargs++] = a;
      continue;
    }
    if (verbatim || a[0] != '-' || !strcmp(a, "-")) {
      c->script = i;
      continue;
    }
    if (!strcmp(a, "-e")) {
      if (i + 1 >= c->argc) {
        fprintf(stderr, "%s: '-e' needs an argument\n", PROGNAME);
        return -1;
      }
      if (c->nexec == (int)(sizeof c->exec / sizeof *c->exec)) {
        fprintf(stderr, "%s: too many -e chunks\n", PROGNAME);
        return -1;
      }
      c->exec[c->nexec++] = c->argv[++i];
    } else if (!strcmp(a, "-v") || !strcmp(a, "--version")) {
      c->version = 1;
    } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      c->help = 1;
    } else if (!strcmp(a, "--paths")) {
      c->paths = 1;
    } else {
      fprintf(stderr, "%s: unknown option '%s' (see pdlua --help)\n", PROGNAME, a);
      return -1;
    }
  }
  if (check_count("--cpus", c->o.cpus) || check_count("--gpus", c->o.gpus)) return -1;
  return 0;
}

/* `pdlua [run|repl] ...`: -e chunks, then the script, stdin or the REPL.
 * Returns ok, or nothing once an error was reported.
 * Stack: [cli] -> [cli, ok] or [cli]; the REPL's: [cli] -> [ok] */
static int pmain(lua_State *L) {
  PDI_STACK(L);
  cli *c = (cli *)lua_touserdata(L, 1);
  luaL_checkversion(L);
  open_state(L);
  store_options(L, &c->o);
  if (c->script)
    create_arg_table(L, c->argv, c->script, c->sargs, c->nsargs);
  int ok = 1;
  for (int k = 0; ok && k < c->nexec; k++)
    ok = dostring(L, c->exec[k]) == LUA_OK;
  if (ok && c->script) {
    ok = run_script(L, c->argv[c->script], c->sargs, c->nsargs) == LUA_OK;
  } else if (ok && (!strcmp(c->cmd->name, "repl") || (c->nexec == 0 && isatty(STDIN_FILENO)))) {
    lua_pushboolean(L, pdi_repl(L) == 0);          /* [ok] */
    PDI_ASSERT(lua_gettop(L) == 1);
    return 1;
  } else if (ok && c->nexec == 0) {
    ok = run_script(L, NULL, NULL, 0) == LUA_OK;   /* script on stdin */
  }
  PDI_STACK_CHECK(L, 0);                           /* [cli] */
  if (!ok) return 0;
  lua_pushboolean(L, 1);                           /* [cli, true] */
  return 1;
}

/* `pdlua nodes ...` and `pdlua ctl ...`: require("pd.cluster").cli(name, args)
 * returns the exit status.  Stack: [cli] -> [ok] */
static int pmain_admin(lua_State *L) {
  PDI_STACK(L);
  cli *c = (cli *)lua_touserdata(L, 1);
  open_state(L);
  store_options(L, &c->o);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "pd.cluster");                /* [cli, require, name] */
  if (report(L, pdi_docall(L, 1, 1)) != LUA_OK) {
    PDI_STACK_CHECK(L, 0);                         /* [cli] */
    return 0;
  }
  lua_getfield(L, -1, "cli");                      /* [cli, cluster, f] */
  lua_pushstring(L, c->cmd->name);
  lua_createtable(L, c->argc, 0);                  /* [cli, cluster, f, name, args] */
  for (int i = 2; i < c->argc; i++) {
    lua_pushstring(L, c->argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  if (report(L, pdi_docall(L, 2, 1)) != LUA_OK) {
    PDI_STACK_CHECK(L, 1);                         /* [cli, cluster] */
    return 0;
  }
  c->rc = (int)lua_tointeger(L, -1);
  lua_pushboolean(L, 1);                           /* [cli, cluster, rc, true] */
  PDI_STACK_CHECK(L, 3);
  return 1;
}
#ifdef PDLUA_SANITIZE
/* ASan/LSan defaults for the sanitizer build (ASAN_OPTIONS still wins).
 * intercept_tls_get_addr=0: LeakSanitizer's tracking of dynamic TLS
 * crashes at exit ("DTLS 3 at 0x948..." then SIGSEGV in its tracer) once
 * a dlopened library with TLS (NVRTC, spec/gpu) is loaded into a process
 * that linked none: since OpenBLAS is dlopened on first use (lua/blas.c),
 * that is every pdlua.  Leak checking itself stays on. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "intercept_tls_get_addr=0"; }
#endif

int main(int argc, char **argv) {
  pdi_is_pdlua = 1;
  cli c;
  memset(&c, 0, sizeof c);
  c.argc = argc;
  c.argv = argv;
  if (parse(&c) != 0) {
    free(c.sargs);
    return 2;
  }
  if (c.cmd->main) return c.cmd->main(argc, argv);
  if (c.help) {
    print_usage(stdout);
    free(c.sargs);
    return 0;
  }
  if (c.version) {
    printf("pdlua %s (%s)\n", PDLUA_VERSION, PDLUA_VM_NAME);
    free(c.sargs);
    return 0;
  }
  if (c.paths) {
    printf("export LUA_PATH='%s;;'\nexport LUA_CPATH='%s;;'\n", pdi_lua_path(), pdi_lua_cpath());
    free(c.sargs);
    return 0;
  }
  lua_State *L = luaL_newstate();
  if (!L) {
    l_message("cannot create state: not enough memory");
    return 1;
  }
  lua_pushcfunction(L, c.cmd->entry);
  lua_pushlightuserdata(L, &c);
  int status = lua_pcall(L, 1, 1, 0);
  int ok = status == LUA_OK && lua_toboolean(L, -1);
  report(L, status);
  lua_close(L);
  free(c.sargs);
  return ok ? c.rc : EXIT_FAILURE;                 /* rc: 0 unless nodes/ctl set it */
}
