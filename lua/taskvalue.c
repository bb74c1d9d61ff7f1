/*
 * taskvalue.c: values across the socketpair between a pool and its
 * workers, the part of pd.core.map that both sides use:
 *
 *   core.map.encode(v), decode(s), codec_encode(v), table(n)
 *   core.map.set_error_mt(mt), set_pd(pd)   the tables the Lua side hands over
 *
 * Every argument, result, error and function crosses as one codec message
 * (lua/codec.h); the per-task coders are static inline in taskvalue.h.
 */
#include "taskvalue.h"

#define SCRATCH_MT "pd.map.Scratch"
#define SCRATCH_KEY "pd.map.scratch"  /* registry: the state's scratch buffer */

/* core.map.codec_encode(v) -> the general coder's bytes, without the
 * lone-scalar path (for the spec that holds that path to them).
 * Stack: [v] -> [v, s] */
static int m_codec_encode(lua_State *L) {
  pd_buf b;
  pd_buf_init(&b);
  pdi_codec_opts o;
  pdi_codec_opts_default(&o);
  o.no_scalar_path = 1;
  luaL_checkany(L, 1);
  pdi_codec_encode(L, 1, &b, &o);                  /* scalars only: cannot raise */
  lua_pushlstring(L, b.data, b.len);
  pd_buf_free(&b);
  return 1;
}

/* The state's scratch buffer (a userdata in the registry that owns it, so
 * an encoding that raises leaks nothing).  __gc and __close free it
 * (idempotent).  Stack: unchanged. */
static int scratch_gc(lua_State *L) {
  pd_buf_free((pd_buf *)lua_touserdata(L, 1));
  return 0;
}

static pd_buf *scratch(lua_State *L) {
  PDI_STACK(L);
  lua_getfield(L, LUA_REGISTRYINDEX, SCRATCH_KEY); /* [b|nil] */
  pd_buf *b = (pd_buf *)lua_touserdata(L, -1);
  lua_pop(L, 1);                                   /* [] */
  if (b) return b;
  b = (pd_buf *)lua_newuserdatauv(L, sizeof *b, 0); /* [b] */
  pd_buf_init(b);
  pdi_newclass(L, SCRATCH_MT, NULL, NULL, scratch_gc); /* [b, mt] */
  lua_setmetatable(L, -2);                         /* [b] */
  lua_setfield(L, LUA_REGISTRYINDEX, SCRATCH_KEY); /* [] */
  PDI_STACK_CHECK(L, 0);
  return b;
}

/* core.map.encode(v) -> string; core.map.decode(s) -> v.  [v] -> [v, s] */
int pdi_map_encode(lua_State *L) {
  luaL_checkany(L, 1);
  pd_buf *b = scratch(L);
  b->len = 0;
  pdi_map_enc_value(L, 1, b);
  lua_pushlstring(L, b->data ? b->data : "", b->len);
  if (b->cap > (1u << 20)) pd_buf_free(b);         /* keep no big buffer */
  return 1;
}

static int m_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  pdi_map_decode(L, s, n);
  return 1;
}

/* core.map.table(narr) -> a new table with room for narr array items.
 * Stack: [narr] -> [narr, t] */
static int m_table(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  lua_createtable(L, n > 0 && n < (1 << 30) ? (int)n : 0, 1);
  return 1;
}

/* core.map.set_error_mt(mt): the metatable of error objects;
 * core.map.set_pd(pd): the table whose `shared` field tasks see.  Each is
 * this function with its registry key as upvalue.  Stack: [t] -> [t] */
static int set_registry(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_pushvalue(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, lua_tostring(L, lua_upvalueindex(1)));
  return 0;
}

static const luaL_Reg map_funcs[] = {
  {"encode", pdi_map_encode}, {"decode", m_decode}, {"table", m_table},
  {"codec_encode", m_codec_encode},
  {NULL, NULL},
};

/* Add the value functions to the module table.  Stack: [m] -> [m] */
void pdi_map_open_values(lua_State *L) {
  PDI_STACK(L);
  luaL_setfuncs(L, map_funcs, 0);
  lua_pushliteral(L, ERROR_MT_KEY);
  lua_pushcclosure(L, set_registry, 1);
  lua_setfield(L, -2, "set_error_mt");
  lua_pushliteral(L, PD_KEY);
  lua_pushcclosure(L, set_registry, 1);
  lua_setfield(L, -2, "set_pd");
  PDI_STACK_CHECK(L, 0);
}
