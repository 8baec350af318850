/*
 * pg_session.h - the PostgreSQL plug-in, as the engine sees it: one
 * protocol table (engine/session.h) whose accept() takes a client socket
 * from a listener of protocol postgres.  Everything else of the plug-in is
 * internal (pg_session_int.h).
 */
#ifndef TANDEM_PG_SESSION_H
#define TANDEM_PG_SESSION_H

#include "engine/session.h"

extern const struct session_protocol pg_protocol;

#endif /* TANDEM_PG_SESSION_H */
