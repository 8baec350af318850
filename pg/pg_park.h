/*
 * pg_park.h - PostgreSQL server connections kept after their client left,
 * for the next client (listener setting server_connections reuse): what
 * PgBouncer's session pooling does, so a connection storm does not fork a
 * backend per client.
 *
 *   client A leaves, idle ──► reset (server_reset_query) ──► parked, per worker
 *                                                              │ read watched:
 *                                                              │ EOF / bytes -> closed
 *   client B authenticated by tandem, same key ◄───────────────┘
 *   (listener, backend, startup packet byte for byte, roles epoch)
 *   gets AuthenticationOk, the login's ParameterStatus set, tandem's own
 *   BackendKeyData and ReadyForQuery from tandem: no round trip to the server.
 *
 * Only a client tandem authenticated itself (auth_file, auth_query) is
 * handed a kept connection: the connection logged in as that user, to
 * that database, with those startup parameters, and tandem has checked
 * the new client's password for that user.  With relayed authentication
 * the server must check every password, so nothing is kept.
 *
 * A connection is kept only when its client left it at an idle point (last
 * ReadyForQuery 'I', nothing unanswered, no message half sent or half
 * read), the session did not fail, the listener's roles have not flipped
 * since it logged in (a kept connection to the old primary handed out after
 * a cutover would take writes the new primary never sees), it is younger
 * than server_lifetime, and fewer than server_pool of the listener's are
 * kept on this worker.  It is reset before it is offered; a reset that
 * fails, any byte the server sends while it is kept, its EOF, a reload
 * (another runtime), a cutover or rollback (another epoch) and
 * server_idle_timeout close it.  Taking one also peeks at its socket, so a
 * backend terminated a moment ago is not handed out.
 */
#ifndef TANDEM_PG_PARK_H
#define TANDEM_PG_PARK_H

#include <stddef.h>
#include <stdint.h>

struct pg_session;

/* What a server connection's login told its client, kept with the connection. */
struct pg_server_login {
    uint8_t *status;    /* the login's ParameterStatus messages, as the server sent them */
    size_t status_len;
    uint32_t be_pid, be_key; /* the server's BackendKeyData: cancel requests go there */
    uint64_t epoch;     /* control_epoch() of the listener when it logged in */
    uint64_t born_ns;   /* when it logged in (server_lifetime) */
};

/* Largest ParameterStatus set kept: a login sending more is not kept. */
#define PG_PARK_STATUS_MAX 8192

/* pg_park_note_status - a ParameterStatus of s's login (msg: the whole message) is kept. */
void pg_park_note_status(struct pg_session *s, const uint8_t *msg, size_t len);

/*
 * pg_park_may_keep - 1 when s's server connection may be kept now, were
 * its client to leave (the conditions above).  The Terminate of a client
 * that leaves is not passed on then.
 */
int pg_park_may_keep(struct pg_session *s);

/*
 * pg_park_put - keep s's server connection: 1 when taken (s->base.server
 * is left closed, the login's status moved with it), 0 when it must be
 * released.  The session engine's server_keep hook.
 */
int pg_park_put(struct pg_session *s);

/*
 * pg_park_take - a kept connection for s (authenticated by tandem, about
 * to connect): 1 when s->base.server is open on one now, s->login filled,
 * nothing sent yet; 0 when none matches (connect as usual).
 */
int pg_park_take(struct pg_session *s);

/* pg_park_login_free - the login's status, when the connection is not kept. */
void pg_park_login_free(struct pg_server_login *login);

#endif /* TANDEM_PG_PARK_H */
