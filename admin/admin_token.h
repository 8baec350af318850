/*
 * admin_token.h - the admin API's bearer token: read from its file, compared
 * in constant time.  Used by the server (admin.c) and by `tandem ctl`.
 *
 * The token file holds one token: printable ASCII without spaces, at most
 * ADMIN_TOKEN_MAX bytes; trailing whitespace (the newline an editor or
 * `kubectl create secret --from-file` leaves) is not part of it.
 */
#ifndef TANDEM_ADMIN_TOKEN_H
#define TANDEM_ADMIN_TOKEN_H

#include <stddef.h>

#define ADMIN_TOKEN_MAX 1024

/*
 * admin_token_read - the token of file PATH into buf (NUL-terminated, at
 * least ADMIN_TOKEN_MAX + 1 bytes).  0 on success; -1 with a message in err
 * when the file cannot be read, is empty, too long, or holds a character a
 * header cannot carry.
 */
int admin_token_read(const char *path, char *buf, size_t bufsize, char *err, size_t errlen);

/*
 * admin_token_equal - 1 when the len bytes at given equal the token want.
 * The time taken does not depend on where they differ, nor on given's
 * length compared with want's (both are hashed first).
 */
int admin_token_equal(const char *want, const char *given, size_t len);

#endif /* TANDEM_ADMIN_TOKEN_H */
