/*
 * compat.h: one C source tree for Lua 5.4 and LuaJIT 2.1.
 *
 * Include this instead of lua.h/lauxlib.h/lualib.h.  Under LuaJIT the 5.3 C
 * API comes from Debian's lua-compat53 (compiled once in compat53.c with the
 * pdcompat_ prefix); the few 5.4-only calls we use get a macro here.
 */
#ifndef PDLUA_COMPAT_H
#define PDLUA_COMPAT_H

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#if LUA_VERSION_NUM < 503
#  include <luajit.h>
#  define COMPAT53_PREFIX pdcompat
#  include "compat-5.3.h"
#  define PDLUA_LUAJIT 1
#  define lua_newuserdatauv(L, s, n) lua_newuserdata((L), (s))
#  define pdc_dump(L, w, d, strip) lua_dump((L), (w), (d), (strip)) /* compat53 drops strip */
#  define pdc_isinteger(L, i) 0
#else
#  define PDLUA_LUAJIT 0
#  define pdc_dump(L, w, d, strip) lua_dump((L), (w), (d), (strip))
#  define pdc_isinteger(L, i) lua_isinteger((L), (i))
#endif

#ifndef LUA_LOADED_TABLE
#  define LUA_LOADED_TABLE "_LOADED"   /* registry key of package.loaded */
#endif

/* The VM's name as users see it: "Lua 5.4" or "LuaJIT 2.1.x". */
#if PDLUA_LUAJIT
#  define PDLUA_VM_NAME LUAJIT_VERSION
#else
#  define PDLUA_VM_NAME LUA_RELEASE
#endif

#endif
