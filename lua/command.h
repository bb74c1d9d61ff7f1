/*
 * command.h: what the pdlua command (pdlua.c) calls in the rest of lua/:
 * the REPL and `pdlua serve`.  Internal (pdi_ names).
 */
#ifndef PDLUA_COMMAND_H
#define PDLUA_COMMAND_H

#include "binding.h"

/* `pdlua serve ...` (cluster.c): runs until SIGINT/SIGTERM; exit status. */
int pdi_serve_main(int argc, char **argv);

/* `pdlua secret FILE` (cluster.c): writes a fresh secret; exit status. */
int pdi_secret_main(int argc, char **argv);

/* The REPL (repl.c): reads, evaluates and prints until end of input.
 * Returns the process exit status. */
int pdi_repl(lua_State *L);

#endif
