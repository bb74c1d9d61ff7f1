/*
 * codec_testhooks.h: the opener of the codec's test-only native module
 * (codec_testhooks.c), for the fuzzer that links it in.
 */
#ifndef PDLUA_CODEC_TESTHOOKS_H
#define PDLUA_CODEC_TESTHOOKS_H

#include "compat.h"

/* Registers the test block (ext 127) in this state.  Stack: [] -> [hooks] */
int luaopen_codec_testhooks(lua_State *L);

#endif
