/*
 * repl.c: the interactive REPL on the coordinator (shaped like lua.c's).
 *
 * Line editing and persistent history come from libedit (its readline
 * interface).  A line is first tried as `return <line>` so expressions
 * print; a chunk that ends in <eof> is incomplete and the REPL waits for
 * more with the ">> " prompt.  Values are printed through pd.pretty when it
 * loads (tables shown as {...}), tostring otherwise.  Errors are shown and
 * the REPL goes on; end of input (Ctrl-D) leaves with status 0.
 *
 * History file: $PDLUA_HISTORY, else ~/.pdlua_history; the last 1000 lines.
 *
 * libedit is dlopened when the REPL starts, not linked: it and what it
 * pulls in (libtinfo, libbsd, libmd) cost every pdlua process, map workers
 * included, start-up time and RSS for a REPL only the coordinator shows.
 * Without libedit the REPL reads plain lines (no editing, no history).
 */
#define _GNU_SOURCE
#include "command.h"

#include <dlfcn.h>
#include <editline/readline.h>   /* types only: the calls go through `ed` */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROMPT1 "> "
#define PROMPT2 ">> "
#define HISTORY_MAX 1000
#define EOFMARK "<eof>"

static char history_path[PATH_MAX];

/* libedit's readline interface, resolved by edit_load(); all NULL when the
 * library or one of the six calls is missing (then plain_readline). */
static struct {
  __typeof__(readline) *readline;
  __typeof__(add_history) *add_history;
  __typeof__(using_history) *using_history;
  __typeof__(stifle_history) *stifle_history;
  __typeof__(read_history) *read_history;
  __typeof__(write_history) *write_history;
} ed;

static void edit_load(void) {
  void *h = dlopen("libedit.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!h) return;
  void *p[6];
  static const char *const names[6] = {"readline", "add_history", "using_history",
                                       "stifle_history", "read_history", "write_history"};
  for (int i = 0; i < 6; i++)
    if (!(p[i] = dlsym(h, names[i]))) return;
  /* object pointers -> function pointers, field by field */
  memcpy(&ed.readline, &p[0], sizeof p[0]);
  memcpy(&ed.add_history, &p[1], sizeof p[1]);
  memcpy(&ed.using_history, &p[2], sizeof p[2]);
  memcpy(&ed.stifle_history, &p[3], sizeof p[3]);
  memcpy(&ed.read_history, &p[4], sizeof p[4]);
  memcpy(&ed.write_history, &p[5], sizeof p[5]);
}

/* readline without libedit: prompt, one line from stdin (malloc'd, no
 * newline), NULL at end of input. */
static char *plain_readline(const char *prompt) {
  fputs(prompt, stdout);
  fflush(stdout);
  char *line = NULL;
  size_t cap = 0;
  ssize_t n = getline(&line, &cap, stdin);
  if (n < 0) { free(line); return NULL; }
  if (n > 0 && line[n - 1] == '\n') line[n - 1] = '\0';
  return line;
}

static void history_open(void) {
  const char *p = getenv("PDLUA_HISTORY");
  const char *home = getenv("HOME");
  history_path[0] = '\0';
  if (p && *p) snprintf(history_path, sizeof history_path, "%s", p);
  else if (home && *home) snprintf(history_path, sizeof history_path, "%s/.pdlua_history", home);
  if (!ed.readline) return;
  ed.using_history();
  ed.stifle_history(HISTORY_MAX);
  if (history_path[0]) ed.read_history(history_path);
}

static void history_save(void) {
  if (history_path[0] && ed.write_history) ed.write_history(history_path);
}

/* Read one line with prompt; pushes it (no newline).  Returns 0 at EOF. */
static int pushline(lua_State *L, int firstline) {
  const char *prompt = firstline ? PROMPT1 : PROMPT2;
  char *b = ed.readline ? ed.readline(prompt) : plain_readline(prompt);
  if (b == NULL) return 0;
  size_t l = strlen(b);
  if (l > 0 && b[l - 1] == '\n') b[--l] = '\0';
  if (firstline && b[0] == '=') lua_pushfstring(L, "return %s", b + 1); /* 5.1 habit */
  else lua_pushlstring(L, b, l);
  free(b);
  return 1;
}

static void addhist(const char *line) {
  if (line[0] != '\0' && ed.add_history) {
    ed.add_history(line);
    history_save();                    /* saved per line: survives a kill */
  }
}

/* Stack: [line] -> [line, f] on success, [line] (error popped) otherwise. */
static int addreturn(lua_State *L) {
  PDI_STACK(L);
  const char *line = lua_tostring(L, -1);
  const char *retline = lua_pushfstring(L, "return %s;", line);
  int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
  lua_remove(L, -2);                   /* drop retline */
  if (status != LUA_OK) lua_pop(L, 1); /* drop the error */
  PDI_STACK_CHECK(L, status == LUA_OK ? 1 : 0);
  return status;
}

/* Is the load status, with its message on top, a chunk cut short by the
 * end of the input?  Stack: unchanged (the caller drops the message). */
static int incomplete(lua_State *L, int status) {
  if (status == LUA_ERRSYNTAX) {
    size_t lmsg;
    const char *msg = lua_tolstring(L, -1, &lmsg);
    size_t lmark = sizeof(EOFMARK) - 1;          /* LuaJIT quotes it: '<eof>' */
    if (lmsg > 0 && msg[lmsg - 1] == '\'') lmsg--;
    if (lmsg >= lmark && strncmp(msg + lmsg - lmark, EOFMARK, lmark) == 0) return 1;
  }
  return 0;
}

/* Stack: [line] -> [buffer, f] or [buffer, err]; returns load status.  At
 * the end of the input inside an incomplete chunk, err is its "<eof>"
 * message (as in later lua.c; 5.4.4's dropped it, then read below the
 * stack). */
static int multiline(lua_State *L) {
  PDI_STACK(L);
  for (;;) {
    size_t len;
    const char *line = lua_tolstring(L, 1, &len);
    int status = luaL_loadbuffer(L, line, len, "=stdin"); /* [buffer, f|err] */
    if (!incomplete(L, status) || !pushline(L, 0)) {
      PDI_STACK_CHECK(L, 1);
      return status;
    }
    lua_remove(L, -2);                 /* [buffer, line]: drop the <eof> message */
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);                 /* [buffer, "\n", line] */
    lua_concat(L, 3);                  /* [buffer]: the lines joined */
  }
}

/* Returns -1 at EOF, else a load status with [f] or [err] on the stack.
 * Stack: [..] -> [] at EOF, else [f] or [err] (the stack is the REPL's). */
static int loadline(lua_State *L) {
  lua_settop(L, 0);
  if (!pushline(L, 1)) return -1;
  int status = addreturn(L);
  if (status != LUA_OK) status = multiline(L);
  addhist(lua_tostring(L, 1));
  lua_remove(L, 1);
  PDI_ASSERT(lua_gettop(L) == 1);
  return status;
}

/* Print the values on the stack (all of them), through pd.pretty if it
 * loads.  Stack: [v...] -> [] */
static void print_values(lua_State *L) {
  PDI_STACK(L);
  int n = lua_gettop(L);
  if (n == 0) return;
  luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
  lua_getglobal(L, "require");
  lua_pushliteral(L, "pd.pretty");
  /* pd.pretty is a table with __call */
  int have_pretty = lua_pcall(L, 1, 1, 0) == LUA_OK && !lua_isnil(L, -1);
  if (!have_pretty) {
    lua_pop(L, 1);
    lua_getglobal(L, "print");
  }
  lua_insert(L, 1);                    /* [printer, v...] */
  if (pdi_docall(L, n, 0) != LUA_OK) {
    fprintf(stderr, "error calling print (%s)\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  PDI_STACK_CHECK(L, -n);
}

/* Stack: [..] -> []: the stack is the REPL's, each line starts from an
 * empty one (as lua.c's doREPL). */
int pdi_repl(lua_State *L) {
  edit_load();
  history_open();
  if (isatty(STDIN_FILENO))
    printf("pdlua %s (%s)  Ctrl-D to leave\n", PDLUA_VERSION, PDLUA_VM_NAME);
  int status;
  while ((status = loadline(L)) != -1) {
    if (status == LUA_OK) status = pdi_docall(L, 0, LUA_MULTRET);
    if (status == LUA_OK) {
      print_values(L);
    } else {
      const char *msg = lua_tostring(L, -1);
      fprintf(stderr, "%s\n", msg ? msg : "(error with no message)");
      fflush(stderr);
    }
    lua_settop(L, 0);
    fflush(stdout);
  }
  putchar('\n');
  fflush(stdout);
  history_save();
  return 0;
}
