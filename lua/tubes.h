/*
 * tubes.h: the three rooms of pd.core.tubes, internal to lua/: tubes.c
 * (the tube ends of a node, pd.TaskNode), gang.c (the coordinator's
 * processes of a task set, pd.Gang) and tubelink.c (links between
 * machines, pd.TubeLink and pd.TubeListener, over core/'s transport).
 * tubes_open.c opens the module and has each add its classes and
 * functions to it.
 */
#ifndef PDLUA_TUBES_H
#define PDLUA_TUBES_H

#include "binding.h"

/* Make the classes of tubes.c / gang.c / tubelink.c and set their
 * functions into the module table on top.  Stack: [t] -> [t] */
void pdi_tubes_open_node(lua_State *L);
void pdi_tubes_open_gang(lua_State *L);
void pdi_tubes_open_links(lua_State *L);

/* The descriptor of the pd.TubeLink at idx (the link keeps it); raises
 * when idx holds no link or a closed one.  Stack: unchanged */
int pdi_tubelink_fd(lua_State *L, int idx);

#endif
