/*
 * pgw.h - PostgreSQL v3 wire protocol codec (pure).
 *
 * Nothing here touches a socket, logs, or allocates.  Parsers take a byte
 * slice and answer PGW_OK (parsed, *used bytes consumed), PGW_NEED_MORE (the
 * slice is a valid prefix; call again with more bytes) or PGW_ERROR (the bytes
 * can never become valid; err says why in words fit for an ErrorResponse).
 * "Is it complete?" and "is it valid?" are separate answers: a length that is
 * out of range is an error as soon as its 4 bytes are seen, even though the
 * body has not arrived.
 *
 * Builders write into a caller buffer of cap bytes and return the length
 * written, or 0 if cap was too small (nothing useful written).
 *
 * Layouts (all integers big-endian):
 *   untyped (first packet):  int32 len (incl. itself) | int32 code | ...
 *   typed:                   byte type | int32 len (incl. itself) | body
 */
#ifndef TANDEM_PGW_H
#define TANDEM_PGW_H

#include <stddef.h>
#include <stdint.h>

enum pgw_status { PGW_OK = 0, PGW_NEED_MORE = 1, PGW_ERROR = -1 };

#define PGW_HEADER_LEN 5                 /* type byte + int32 length */
#define PGW_STARTUP_MAX_LEN 10000        /* as the server's MAX_STARTUP_PACKET_LENGTH */
#define PGW_STARTUP_MAX_PARAMS 64

#define PGW_CODE_CANCEL 80877102u        /* 1234 << 16 | 5678 */
#define PGW_CODE_SSL 80877103u           /* 1234 << 16 | 5679 */
#define PGW_CODE_GSSENC 80877104u        /* 1234 << 16 | 5680 */
#define PGW_PROTO_MAJOR(v) ((v) >> 16)
#define PGW_PROTO_MINOR(v) ((v)&0xffff)
#define PGW_PROTO_30 0x00030000u

/* SQLSTATEs tandem itself sends. */
#define PGW_SQLSTATE_PROTOCOL_VIOLATION "08P01"
#define PGW_SQLSTATE_CONNECTION_FAILURE "08006"
#define PGW_SQLSTATE_TOO_MANY_CONNECTIONS "53300"
#define PGW_SQLSTATE_ADMIN_SHUTDOWN "57P01"
#define PGW_SQLSTATE_FEATURE_NOT_SUPPORTED "0A000"
#define PGW_SQLSTATE_INVALID_AUTHORIZATION "28000"

/* Authentication request codes ('R' messages). */
enum pgw_auth_code {
    PGW_AUTH_OK = 0,
    PGW_AUTH_CLEARTEXT = 3,
    PGW_AUTH_MD5 = 5,
    PGW_AUTH_SASL = 10,
    PGW_AUTH_SASL_CONTINUE = 11,
    PGW_AUTH_SASL_FINAL = 12,
};

/* ------------------------------------------------------------------ */
/* The first, untyped packet from a client.                           */

enum pgw_startup_kind {
    PGW_STARTUP_MESSAGE,   /* protocol 3.x with parameters */
    PGW_STARTUP_SSL,       /* SSLRequest */
    PGW_STARTUP_GSSENC,    /* GSSENCRequest */
    PGW_STARTUP_CANCEL,    /* CancelRequest */
};

struct pgw_param {
    const char *name;      /* points into the parsed buffer, NUL-terminated */
    const char *value;
};

struct pgw_startup {
    enum pgw_startup_kind kind;
    uint32_t version;      /* PGW_STARTUP_MESSAGE: major<<16 | minor */
    uint32_t cancel_pid;   /* PGW_STARTUP_CANCEL */
    uint32_t cancel_key;
    struct pgw_param params[PGW_STARTUP_MAX_PARAMS];
    size_t nparams;
};

/*
 * pgw_startup_parse - parse the first packet of a connection.
 *
 * Accepts SSLRequest, GSSENCRequest, CancelRequest and StartupMessage with
 * major version 3 (any minor).  Refuses: length < 8 or > PGW_STARTUP_MAX_LEN,
 * other protocol versions, a parameter list that is not a sequence of
 * NUL-terminated name/value pairs ended by one extra NUL, a missing "user",
 * more than PGW_STARTUP_MAX_PARAMS pairs.  out->params point into buf, so buf
 * must outlive out.  *used is the packet length on PGW_OK.
 *
 * NEED_MORE until the whole packet is in, except that a bad length is an
 * error once its 4 bytes are in, and a bad code (or a special code with the
 * wrong length) once its 8 bytes are in.  err (may be NULL) is one of:
 *   "invalid length of startup packet"      length < 8 or > PGW_STARTUP_MAX_LEN
 *   "invalid length of cancel request"      CancelRequest not 16 bytes
 *   "invalid length of encryption request"  SSL/GSSENCRequest not 8 bytes
 *   "unsupported frontend protocol"         major version not 3
 *   "invalid startup packet layout: expected terminator as last byte"
 *   "invalid startup packet layout: missing parameter value"
 *   "too many parameters in startup packet"
 *   "no PostgreSQL user name specified in startup packet"  (absent or empty)
 * Only 4-byte cancel keys (protocol 3.0/3.1) are accepted.
 */
enum pgw_status pgw_startup_parse(const uint8_t *buf, size_t len, size_t *used,
                                  struct pgw_startup *out, const char **err);

/*
 * pgw_startup_param - value of NAME in a parsed startup, or NULL.  When a
 * name is repeated the last one wins, as in the server.
 */
const char *pgw_startup_param(const struct pgw_startup *st, const char *name);

/* ------------------------------------------------------------------ */
/* Typed messages.                                                    */

struct pgw_header {
    uint8_t type;
    uint32_t len;          /* the wire length: body + 4 */
};

/* Total bytes of the message on the wire. */
static inline size_t
pgw_header_total(const struct pgw_header *h)
{
    return (size_t)h->len + 1;
}

/*
 * pgw_header_parse - read a typed message header from buf.
 *
 * PGW_NEED_MORE when len < 5.  PGW_ERROR when the length field is < 4 or
 * greater than max_len (max_len counts the body plus the 4 length bytes).
 * It does not judge the type: see pgw_frontend_type_valid().  err (may be
 * NULL): "invalid message length" or "message too large".
 */
enum pgw_status pgw_header_parse(const uint8_t *buf, size_t len, uint32_t max_len,
                                 struct pgw_header *out, const char **err);

/* Message types a client may send after startup (B C c d D E f F H p P Q S X). */
int pgw_frontend_type_valid(uint8_t type);

/* Message types a server may send (1 2 3 A c C d D E G H I K n N R s S t T V W Z v). */
int pgw_backend_type_valid(uint8_t type);

/*
 * pgw_backend_len_valid - 0 when a server message of this type cannot have
 * this length field (self-inclusive): ReadyForQuery is exactly 5, the
 * body-less ones (1 2 3 c I n s) exactly 4, the COPY responses (G H W: a
 * format byte, an int16 column count, an int16 per column) 7 to 7 + 2 *
 * 65535.  Checked when framing, so no later step reads a byte the message
 * does not have, nor waits for a gigabyte a header merely claims.  Other
 * types: 1.
 */
int pgw_backend_len_valid(uint8_t type, uint32_t len);

/*
 * Body parsers: body/len are a whole message body (without type and length).
 * They validate the layout fully; pointers returned point into body.  They
 * answer PGW_OK or PGW_ERROR, never PGW_NEED_MORE: a string that does not end
 * with its NUL inside body, or bytes left after the last field, is an error.
 */

struct pgw_error_fields {
    char severity[16];     /* "ERROR", "FATAL", ... (V field, else S) */
    char sqlstate[6];      /* C field, "" if absent */
    const char *message;   /* M field, NULL if absent; points into body */
    size_t message_len;
};
/*
 * 'E' / 'N': fields (code byte, string) up to a zero byte that must be the
 * last byte.  A C field must be exactly 5 characters.  A severity longer than
 * 15 bytes (a localized S) is cut, never inside a UTF-8 character.  Fields
 * tandem does not use are skipped; a repeated field: the last wins.
 */
enum pgw_status pgw_error_parse(const uint8_t *body, size_t len, struct pgw_error_fields *out);

/*
 * pgw_sqlstate_is_denial - 1 when sqlstate (5 characters) says the server
 * refused the statement for the user's rights or identity: 42501
 * insufficient_privilege, class 28 (invalid authorization), class 0L
 * (invalid grantor), class 0P (invalid role specification).  Such a
 * statement must never be replayed with anyone else's rights.
 */
int pgw_sqlstate_is_denial(const char *sqlstate);

/* 'Z': one status byte, 'I' idle, 'T' in transaction, 'E' failed transaction
 * (any other byte: PGW_ERROR). */
enum pgw_status pgw_ready_parse(const uint8_t *body, size_t len, uint8_t *status);

/* 'K': BackendKeyData, exactly 8 bytes (protocol 3.2's longer keys: ERROR). */
enum pgw_status pgw_backend_key_parse(const uint8_t *body, size_t len, uint32_t *pid,
                                      uint32_t *key);

/*
 * 'R': the authentication code (first int32).  The layout is checked for the
 * codes whose layout is fixed: Ok, KerberosV5, Cleartext, SCMCredential,
 * GSS and SSPI are the code alone, MD5 has a 4-byte salt, SASL a valid
 * mechanism list (one or more names).  GSSContinue, SASLContinue and
 * SASLFinal carry opaque data; a code not listed here is returned as is, for
 * the caller to refuse.
 */
enum pgw_status pgw_auth_parse(const uint8_t *body, size_t len, uint32_t *code);

/* 'S' from the server: ParameterStatus name (non-empty) and value,
 * NUL-terminated in body, filling it exactly. */
enum pgw_status pgw_parameter_status_parse(const uint8_t *body, size_t len, const char **name,
                                           const char **value);

/*
 * pgw_sasl_strip_plus - rewrite an AuthenticationSASL ('R', code 10) body
 * without the *-PLUS (channel binding) mechanisms.  tandem terminates TLS, so
 * the client's channel binding could never match the server's.
 *
 * Writes a complete message (type 'R', length, body) into out.  Returns its
 * length, or 0 if the body is not a valid SASL list, cap is too small, or no
 * mechanism would remain.  Names are matched case-sensitively, as sent; the
 * kept ones stay in order.  out must not overlap body.
 */
size_t pgw_sasl_strip_plus(const uint8_t *body, size_t len, uint8_t *out, size_t cap);

/* ------------------------------------------------------------------ */
/* Builders (complete messages, ready to send).                       */

/*
 * ErrorResponse with S, V, C, M fields.  message is cut to fit cap (never
 * inside a UTF-8 character); NULL means "".  0 when even an empty message
 * does not fit, or sqlstate is not 5 characters.
 */
size_t pgw_build_error(uint8_t *out, size_t cap, const char *severity, const char *sqlstate,
                       const char *message);

/* NegotiateProtocolVersion ('v'): newest minor supported, unrecognized options. */
size_t pgw_build_negotiate(uint8_t *out, size_t cap, uint32_t newest_minor,
                           const char *const *options, size_t noptions);

/* BackendKeyData ('K'). */
size_t pgw_build_backend_key(uint8_t *out, size_t cap, uint32_t pid, uint32_t key);

/* CancelRequest (untyped, 16 bytes). */
size_t pgw_build_cancel(uint8_t *out, size_t cap, uint32_t pid, uint32_t key);

/* SSLRequest (untyped, 8 bytes). */
size_t pgw_build_ssl_request(uint8_t *out, size_t cap);

/*
 * StartupMessage for protocol 3.0 with the given parameters, skipping any
 * whose name starts with "_pq_." (protocol options tandem does not speak),
 * and any with a NULL or empty name or a NULL value.  0 also when the packet
 * would be longer than PGW_STARTUP_MAX_LEN (a server would refuse it).
 */
size_t pgw_build_startup(uint8_t *out, size_t cap, const struct pgw_param *params,
                         size_t nparams);

/* Terminate ('X'). */
size_t pgw_build_terminate(uint8_t *out, size_t cap);

/* Query ('Q') with sql (NUL-terminated; must hold no NUL itself): 0 when it does not fit. */
size_t pgw_build_query(uint8_t *out, size_t cap, const char *sql);

/* ------------------------------------------------------------------ */
/* Additions the proxy needs (same conventions as above).             */

/* 'Q': the query string, NUL-terminated as the last byte of body. */
enum pgw_status pgw_query_parse(const uint8_t *body, size_t len, const char **sql,
                                size_t *sql_len);

/*
 * 'C' CommandComplete: the tag, e.g. "INSERT 0 5", "SELECT 3", "CREATE TABLE".
 * verb is the tag up to its first all-digit word ("INSERT", "CREATE TABLE");
 * rows is the last word when it is all digits (has_rows set), else 0.
 */
struct pgw_command_tag {
    const char *tag;       /* points into body, NUL-terminated */
    size_t tag_len;
    size_t verb_len;       /* tag[0 .. verb_len) */
    uint64_t rows;
    int has_rows;
};
enum pgw_status pgw_command_complete_parse(const uint8_t *body, size_t len,
                                           struct pgw_command_tag *out);

/*
 * 'v' NegotiateProtocolVersion: newest minor the server supports, and the
 * unrecognized protocol options.  *first_option points at the first name (or
 * is NULL when there are none); the noptions names follow one another in
 * body, each NUL-terminated.  Names must be non-empty and fill the body.
 */
enum pgw_status pgw_negotiate_parse(const uint8_t *body, size_t len, uint32_t *newest_minor,
                                    uint32_t *noptions, const char **first_option);

/* ReadyForQuery ('Z') with status 'I', 'T' or 'E' (any other status: 0). */
size_t pgw_build_ready(uint8_t *out, size_t cap, uint8_t status);

/*
 * A unit's one statement call, decoded from the client's own messages so
 * that it can be run again elsewhere (a re-check of a mismatching read):
 * either one Query, or [Parse] Bind [Describe] Execute Sync on the unnamed
 * portal.  Everything points into the unit's bytes.  sql NULL: a Bind of a
 * statement prepared in an earlier unit (the caller knows its text);
 * param_types then NULL too (the server infers them).
 */
#define PGW_CALL_MAX_PARAMS 256

struct pgw_call {
    int simple;                /* a Query: sql may hold several statements, no parameters */
    const char *sql;           /* NUL-terminated */
    uint16_t nparams;
    uint32_t param_types[PGW_CALL_MAX_PARAMS]; /* from the Parse; 0 = unspecified */
    uint16_t ntypes;           /* how many the Parse gave (0: none, or no Parse) */
    int param_formats[PGW_CALL_MAX_PARAMS];    /* 0 text, 1 binary, per parameter */
    const char *values[PGW_CALL_MAX_PARAMS];   /* NULL: SQL NULL */
    int lengths[PGW_CALL_MAX_PARAMS];
};

/*
 * pgw_call_decode - PGW_OK with *call filled when unit (len bytes of whole
 * frontend messages) is one such call; PGW_ERROR when it is anything else
 * (several Executes, COPY, FunctionCall, a named portal, malformed bytes,
 * more than PGW_CALL_MAX_PARAMS parameters).
 */
enum pgw_status pgw_call_decode(const uint8_t *unit, size_t len, struct pgw_call *call);

#endif /* TANDEM_PGW_H */
