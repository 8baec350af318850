/*
 * redis_session.h - the Redis plug-in, as the engine sees it: one protocol
 * table (engine/session.h) whose accept() takes a client socket from a
 * listener of protocol redis.  Everything else of the plug-in is internal
 * (redis_session_int.h).
 */
#ifndef TANDEM_REDIS_SESSION_H
#define TANDEM_REDIS_SESSION_H

#include "engine/session.h"

extern const struct session_protocol redis_protocol;

#endif /* TANDEM_REDIS_SESSION_H */
