/* compat53.c: the lua-compat53 functions, compiled once, for LuaJIT builds. */
#include "compat.h"
#if LUA_VERSION_NUM < 503
#  include "compat-5.3.c"
#else
typedef int pdlua_compat53_unused; /* ISO C wants a non-empty unit */
#endif
