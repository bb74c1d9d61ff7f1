/*
 * tubes_open.c: luaopen_pd_core_tubes, pd.core.tubes put together from its
 * three rooms (tubes.h): the node's tube ends (tubes.c), the coordinator's
 * processes of a task set (gang.c) and the links between machines
 * (tubelink.c).  Nothing else is done here.
 */
#include "tubes.h"

/* Stack: [] -> [pd.core.tubes] */
int luaopen_pd_core_tubes(lua_State *L) {
  PDI_STACK(L);
  lua_createtable(L, 0, 16);                                  /* [t] */
  pdi_tubes_open_node(L);
  pdi_tubes_open_gang(L);
  pdi_tubes_open_links(L);
  PDI_STACK_CHECK(L, 1);
  return 1;
}
