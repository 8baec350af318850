/*
 * pgw.c - PostgreSQL v3 wire protocol codec (pure: no socket, no log, no
 * malloc).
 *
 * Every parser reads only inside [buf, buf + len) and checks each length it
 * reads off the wire before using it.  Strings are accepted only after their
 * NUL terminator has been found inside the slice, so the pointers handed
 * back can be used as C strings.
 *
 * Builders go through struct wbuf: a cursor with a sticky `failed` flag, so
 * a builder writes its fields one after another and checks once at the end;
 * no write ever goes past cap.
 */
#include "protocol/pgw.h"

#include <string.h>

/* ------------------------------------------------------------------ */
/* Small helpers.                                                     */

static uint32_t
rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void
wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/*
 * Length of the NUL-terminated string at p, looking at no more than avail
 * bytes; -1 when there is no NUL inside them.
 */
static ptrdiff_t
cstr_len(const uint8_t *p, size_t avail)
{
    const uint8_t *nul = avail ? memchr(p, 0, avail) : NULL;
    return nul ? nul - p : -1;
}

struct wbuf {
    uint8_t *out;
    size_t cap;
    size_t pos;
    int failed;
};

static void
wbuf_put(struct wbuf *w, const void *p, size_t n)
{
    if (w->failed || n > w->cap - w->pos) {
        w->failed = 1;
        return;
    }
    if (n)
        memcpy(w->out + w->pos, p, n);
    w->pos += n;
}

static void
wbuf_byte(struct wbuf *w, uint8_t b)
{
    wbuf_put(w, &b, 1);
}

static void
wbuf_u32(struct wbuf *w, uint32_t v)
{
    uint8_t b[4];
    wr32(b, v);
    wbuf_put(w, b, 4);
}

/* The string and its NUL. */
static void
wbuf_cstr(struct wbuf *w, const char *s)
{
    wbuf_put(w, s, strlen(s) + 1);
}

/*
 * Finish a message begun at `start` (type byte there, or none when untyped):
 * patch the length field, answer the total length or 0 when anything failed.
 */
static size_t
wbuf_finish(struct wbuf *w, size_t start, int typed)
{
    if (w->failed)
        return 0;
    size_t lenpos = start + (typed ? 1 : 0);
    size_t msglen = w->pos - lenpos;
    if (msglen > INT32_MAX)
        return 0;
    wr32(w->out + lenpos, (uint32_t)msglen);
    return w->pos;
}

/* Begin a typed message: type byte and a length placeholder. */
static void
wbuf_begin(struct wbuf *w, uint8_t type)
{
    wbuf_byte(w, type);
    wbuf_u32(w, 0);
}

/*
 * Number of bytes of s (strlen n) to keep when at most max fit, not cutting
 * a UTF-8 sequence in two: back off over continuation bytes.
 */
static size_t
utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    size_t k = max;
    while (k > 0 && ((uint8_t)s[k] & 0xc0) == 0x80)
        k--;
    return k;
}

/*
 * A SASL mechanism list: one or more non-empty NUL-terminated names, then a
 * single NUL as the last byte.  Answers the number of names, 0 if invalid.
 */
static size_t
sasl_list_count(const uint8_t *p, size_t len)
{
    size_t off = 0, n = 0;
    for (;;) {
        if (off >= len)
            return 0;
        if (p[off] == 0)
            return off == len - 1 ? n : 0;
        ptrdiff_t l = cstr_len(p + off, len - off);
        if (l < 0)
            return 0;
        n++;
        off += (size_t)l + 1;
    }
}

static int
ends_with_plus(const uint8_t *name, size_t l)
{
    return l >= 5 && memcmp(name + l - 5, "-PLUS", 5) == 0;
}

/* ------------------------------------------------------------------ */
/* Startup packet.                                                    */

/*
 * The parameter list of a StartupMessage: buf[8 .. pktlen) holds name/value
 * pairs, each NUL-terminated, then one extra NUL as the very last byte.
 * Names are non-empty (an empty name is the terminator); values may be empty.
 */
static enum pgw_status
startup_params(const uint8_t *buf, size_t pktlen, struct pgw_startup *out, const char **err)
{
    size_t off = 8;
    for (;;) {
        if (off >= pktlen) {
            *err = "invalid startup packet layout: expected terminator as last byte";
            return PGW_ERROR;
        }
        if (buf[off] == 0) {
            if (off != pktlen - 1) {
                *err = "invalid startup packet layout: expected terminator as last byte";
                return PGW_ERROR;
            }
            return PGW_OK;
        }
        ptrdiff_t nlen = cstr_len(buf + off, pktlen - off);
        if (nlen < 0) {
            *err = "invalid startup packet layout: expected terminator as last byte";
            return PGW_ERROR;
        }
        size_t voff = off + (size_t)nlen + 1;
        ptrdiff_t vlen = voff < pktlen ? cstr_len(buf + voff, pktlen - voff) : -1;
        if (vlen < 0) {
            *err = "invalid startup packet layout: missing parameter value";
            return PGW_ERROR;
        }
        if (out->nparams == PGW_STARTUP_MAX_PARAMS) {
            *err = "too many parameters in startup packet";
            return PGW_ERROR;
        }
        out->params[out->nparams].name = (const char *)(buf + off);
        out->params[out->nparams].value = (const char *)(buf + voff);
        out->nparams++;
        off = voff + (size_t)vlen + 1;
    }
}

enum pgw_status
pgw_startup_parse(const uint8_t *buf, size_t len, size_t *used, struct pgw_startup *out,
                  const char **err)
{
    const char *dummy;
    if (err == NULL)
        err = &dummy;
    *err = NULL;

    if (len < 4)
        return PGW_NEED_MORE;
    uint32_t pktlen = rd32(buf);
    if (pktlen < 8 || pktlen > PGW_STARTUP_MAX_LEN) {
        *err = "invalid length of startup packet";
        return PGW_ERROR;
    }
    if (len < 8)
        return PGW_NEED_MORE;

    uint32_t code = rd32(buf + 4);
    out->version = code;
    out->cancel_pid = 0;
    out->cancel_key = 0;
    out->nparams = 0;

    switch (code) {
    case PGW_CODE_CANCEL:
        if (pktlen != 16) {
            *err = "invalid length of cancel request";
            return PGW_ERROR;
        }
        if (len < 16)
            return PGW_NEED_MORE;
        out->kind = PGW_STARTUP_CANCEL;
        out->cancel_pid = rd32(buf + 8);
        out->cancel_key = rd32(buf + 12);
        *used = 16;
        return PGW_OK;
    case PGW_CODE_SSL:
    case PGW_CODE_GSSENC:
        if (pktlen != 8) {
            *err = "invalid length of encryption request";
            return PGW_ERROR;
        }
        out->kind = code == PGW_CODE_SSL ? PGW_STARTUP_SSL : PGW_STARTUP_GSSENC;
        *used = 8;
        return PGW_OK;
    default:
        break;
    }

    if (PGW_PROTO_MAJOR(code) != 3) {
        *err = "unsupported frontend protocol";
        return PGW_ERROR;
    }
    if (len < pktlen)
        return PGW_NEED_MORE;

    out->kind = PGW_STARTUP_MESSAGE;
    enum pgw_status st = startup_params(buf, pktlen, out, err);
    if (st != PGW_OK)
        return st;
    const char *user = pgw_startup_param(out, "user");
    if (user == NULL || user[0] == '\0') {
        *err = "no PostgreSQL user name specified in startup packet";
        return PGW_ERROR;
    }
    *used = pktlen;
    return PGW_OK;
}

const char *
pgw_startup_param(const struct pgw_startup *st, const char *name)
{
    /* The last occurrence wins, as in the server. */
    for (size_t i = st->nparams; i-- > 0;)
        if (strcmp(st->params[i].name, name) == 0)
            return st->params[i].value;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Typed messages.                                                    */

enum pgw_status
pgw_header_parse(const uint8_t *buf, size_t len, uint32_t max_len, struct pgw_header *out,
                 const char **err)
{
    const char *dummy;
    if (err == NULL)
        err = &dummy;
    *err = NULL;

    if (len < PGW_HEADER_LEN)
        return PGW_NEED_MORE;
    uint32_t l = rd32(buf + 1);
    if (l < 4) {
        *err = "invalid message length";
        return PGW_ERROR;
    }
    if (l > max_len) {
        *err = "message too large";
        return PGW_ERROR;
    }
    out->type = buf[0];
    out->len = l;
    return PGW_OK;
}

int
pgw_frontend_type_valid(uint8_t type)
{
    switch (type) {
    case 'B':
    case 'C':
    case 'c':
    case 'd':
    case 'D':
    case 'E':
    case 'f':
    case 'F':
    case 'H':
    case 'p':
    case 'P':
    case 'Q':
    case 'S':
    case 'X':
        return 1;
    default:
        return 0;
    }
}

int
pgw_backend_type_valid(uint8_t type)
{
    switch (type) {
    case '1':
    case '2':
    case '3':
    case 'A':
    case 'c':
    case 'C':
    case 'd':
    case 'D':
    case 'E':
    case 'G':
    case 'H':
    case 'I':
    case 'K':
    case 'n':
    case 'N':
    case 'R':
    case 's':
    case 'S':
    case 't':
    case 'T':
    case 'V':
    case 'W':
    case 'Z':
    case 'v':
        return 1;
    default:
        return 0;
    }
}

int
pgw_backend_len_valid(uint8_t type, uint32_t len)
{
    switch (type) {
    case 'Z':
        return len == 5;
    case 'G':
    case 'H':
    case 'W':
        return len >= 7 && len <= 7 + 2 * 65535u;
    case '1':
    case '2':
    case '3':
    case 'c':
    case 'I':
    case 'n':
    case 's':
        return len == 4;
    default:
        return 1;
    }
}

/* ------------------------------------------------------------------ */
/* Body parsers.                                                      */

enum pgw_status
pgw_error_parse(const uint8_t *body, size_t len, struct pgw_error_fields *out)
{
    const uint8_t *sev_s = NULL, *sev_v = NULL;
    size_t sev_s_len = 0, sev_v_len = 0;

    out->severity[0] = '\0';
    out->sqlstate[0] = '\0';
    out->message = NULL;
    out->message_len = 0;

    size_t off = 0;
    for (;;) {
        if (off >= len)
            return PGW_ERROR; /* no terminating zero byte */
        uint8_t code = body[off++];
        if (code == 0)
            break;
        ptrdiff_t l = cstr_len(body + off, len - off);
        if (l < 0)
            return PGW_ERROR;
        const uint8_t *val = body + off;
        switch (code) {
        case 'S':
            sev_s = val;
            sev_s_len = (size_t)l;
            break;
        case 'V':
            sev_v = val;
            sev_v_len = (size_t)l;
            break;
        case 'C':
            if (l != 5)
                return PGW_ERROR; /* a SQLSTATE is five characters */
            memcpy(out->sqlstate, val, 6);
            break;
        case 'M':
            out->message = (const char *)val;
            out->message_len = (size_t)l;
            break;
        default:
            break; /* other fields: skipped */
        }
        off += (size_t)l + 1;
    }
    if (off != len)
        return PGW_ERROR; /* bytes after the terminator */

    /* V is never localized; S (the only one before 9.6) may be. */
    const uint8_t *sev = sev_v ? sev_v : sev_s;
    size_t sev_len = sev_v ? sev_v_len : sev_s_len;
    if (sev) {
        size_t k = utf8_cut((const char *)sev, sev_len, sizeof(out->severity) - 1);
        memcpy(out->severity, sev, k);
        out->severity[k] = '\0';
    }
    return PGW_OK;
}

int
pgw_sqlstate_is_denial(const char *sqlstate)
{
    if (sqlstate == NULL || strlen(sqlstate) != 5)
        return 0;
    return strcmp(sqlstate, "42501") == 0 || strncmp(sqlstate, "28", 2) == 0 ||
           strncmp(sqlstate, "0L", 2) == 0 || strncmp(sqlstate, "0P", 2) == 0;
}

enum pgw_status
pgw_ready_parse(const uint8_t *body, size_t len, uint8_t *status)
{
    if (len != 1)
        return PGW_ERROR;
    if (body[0] != 'I' && body[0] != 'T' && body[0] != 'E')
        return PGW_ERROR;
    *status = body[0];
    return PGW_OK;
}

enum pgw_status
pgw_backend_key_parse(const uint8_t *body, size_t len, uint32_t *pid, uint32_t *key)
{
    if (len != 8)
        return PGW_ERROR;
    *pid = rd32(body);
    *key = rd32(body + 4);
    return PGW_OK;
}

enum pgw_status
pgw_auth_parse(const uint8_t *body, size_t len, uint32_t *code)
{
    if (len < 4)
        return PGW_ERROR;
    uint32_t c = rd32(body);
    switch (c) {
    case PGW_AUTH_OK:
    case 2: /* KerberosV5 */
    case PGW_AUTH_CLEARTEXT:
    case 6: /* SCMCredential */
    case 7: /* GSS */
    case 9: /* SSPI */
        if (len != 4)
            return PGW_ERROR;
        break;
    case PGW_AUTH_MD5:
        if (len != 8) /* 4-byte salt */
            return PGW_ERROR;
        break;
    case PGW_AUTH_SASL:
        if (sasl_list_count(body + 4, len - 4) == 0)
            return PGW_ERROR;
        break;
    default:
        /* GSSContinue (8), SASLContinue, SASLFinal: opaque data of any
         * length.  Codes we do not know: the caller decides. */
        break;
    }
    *code = c;
    return PGW_OK;
}

enum pgw_status
pgw_parameter_status_parse(const uint8_t *body, size_t len, const char **name, const char **value)
{
    ptrdiff_t nlen = cstr_len(body, len);
    if (nlen <= 0)
        return PGW_ERROR; /* missing or empty name */
    size_t voff = (size_t)nlen + 1;
    ptrdiff_t vlen = voff < len ? cstr_len(body + voff, len - voff) : -1;
    if (vlen < 0 || voff + (size_t)vlen + 1 != len)
        return PGW_ERROR;
    *name = (const char *)body;
    *value = (const char *)(body + voff);
    return PGW_OK;
}

enum pgw_status
pgw_query_parse(const uint8_t *body, size_t len, const char **sql, size_t *sql_len)
{
    ptrdiff_t l = cstr_len(body, len);
    if (l < 0 || (size_t)l + 1 != len)
        return PGW_ERROR;
    *sql = (const char *)body;
    *sql_len = (size_t)l;
    return PGW_OK;
}

static int
all_digits(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

enum pgw_status
pgw_command_complete_parse(const uint8_t *body, size_t len, struct pgw_command_tag *out)
{
    ptrdiff_t l = cstr_len(body, len);
    if (l < 0 || (size_t)l + 1 != len)
        return PGW_ERROR;
    const char *tag = (const char *)body;
    size_t n = (size_t)l;

    out->tag = tag;
    out->tag_len = n;
    out->verb_len = n;
    out->rows = 0;
    out->has_rows = 0;

    /* verb: words up to the first all-digit one. */
    size_t w = 0;
    while (w < n) {
        size_t e = w;
        while (e < n && tag[e] != ' ')
            e++;
        if (all_digits(tag + w, e - w)) {
            size_t v = w;
            while (v > 0 && tag[v - 1] == ' ')
                v--;
            out->verb_len = v;
            break;
        }
        w = e + 1;
    }

    /* rows: the last word, if all digits and it fits. */
    size_t s = n;
    while (s > 0 && tag[s - 1] != ' ')
        s--;
    if (all_digits(tag + s, n - s)) {
        uint64_t r = 0;
        for (size_t i = s; i < n; i++) {
            unsigned d = (unsigned)(tag[i] - '0');
            if (r > (UINT64_MAX - d) / 10)
                return PGW_OK; /* absurd count: no rows */
            r = r * 10 + d;
        }
        out->rows = r;
        out->has_rows = 1;
    }
    return PGW_OK;
}

enum pgw_status
pgw_negotiate_parse(const uint8_t *body, size_t len, uint32_t *newest_minor, uint32_t *noptions,
                    const char **first_option)
{
    if (len < 8)
        return PGW_ERROR;
    uint32_t n = rd32(body + 4);
    size_t off = 8;
    for (uint32_t i = 0; i < n; i++) {
        /* Each name takes at least 2 bytes: a bogus n fails here quickly. */
        ptrdiff_t l = off < len ? cstr_len(body + off, len - off) : -1;
        if (l <= 0)
            return PGW_ERROR;
        off += (size_t)l + 1;
    }
    if (off != len)
        return PGW_ERROR;
    *newest_minor = rd32(body);
    *noptions = n;
    *first_option = n ? (const char *)(body + 8) : NULL;
    return PGW_OK;
}

size_t
pgw_sasl_strip_plus(const uint8_t *body, size_t len, uint8_t *out, size_t cap)
{
    if (len < 4 || rd32(body) != PGW_AUTH_SASL)
        return 0;
    if (sasl_list_count(body + 4, len - 4) == 0)
        return 0;

    struct wbuf w = {out, cap, 0, 0};
    size_t kept = 0;
    wbuf_begin(&w, 'R');
    wbuf_u32(&w, PGW_AUTH_SASL);
    /* The list was validated: every name is NUL-terminated inside body. */
    size_t off = 4;
    while (body[off] != 0) {
        size_t l = strlen((const char *)(body + off));
        if (!ends_with_plus(body + off, l)) {
            wbuf_put(&w, body + off, l + 1);
            kept++;
        }
        off += l + 1;
    }
    wbuf_byte(&w, 0);
    if (kept == 0)
        return 0;
    return wbuf_finish(&w, 0, 1);
}

/* ------------------------------------------------------------------ */
/* Builders.                                                          */

size_t
pgw_build_error(uint8_t *out, size_t cap, const char *severity, const char *sqlstate,
                const char *message)
{
    if (message == NULL)
        message = "";
    size_t sev_len = strlen(severity), state_len = strlen(sqlstate);
    if (state_len != 5)
        return 0; /* not a SQLSTATE: our bug */
    /* Everything but the message text. */
    size_t fixed = PGW_HEADER_LEN + 2 * (1 + sev_len + 1) + (1 + state_len + 1) + 2 + 1;
    if (fixed > cap || fixed > INT32_MAX)
        return 0;
    size_t room = cap - fixed;
    if (room > INT32_MAX - fixed)
        room = INT32_MAX - fixed;
    size_t msg_len = utf8_cut(message, strlen(message), room);

    struct wbuf w = {out, cap, 0, 0};
    wbuf_begin(&w, 'E');
    wbuf_byte(&w, 'S');
    wbuf_cstr(&w, severity);
    wbuf_byte(&w, 'V');
    wbuf_cstr(&w, severity);
    wbuf_byte(&w, 'C');
    wbuf_cstr(&w, sqlstate);
    wbuf_byte(&w, 'M');
    wbuf_put(&w, message, msg_len);
    wbuf_byte(&w, 0);
    wbuf_byte(&w, 0);
    return wbuf_finish(&w, 0, 1);
}

size_t
pgw_build_negotiate(uint8_t *out, size_t cap, uint32_t newest_minor, const char *const *options,
                    size_t noptions)
{
    if (noptions > INT32_MAX)
        return 0;
    struct wbuf w = {out, cap, 0, 0};
    wbuf_begin(&w, 'v');
    wbuf_u32(&w, newest_minor);
    wbuf_u32(&w, (uint32_t)noptions);
    for (size_t i = 0; i < noptions; i++)
        wbuf_cstr(&w, options[i]);
    return wbuf_finish(&w, 0, 1);
}

size_t
pgw_build_backend_key(uint8_t *out, size_t cap, uint32_t pid, uint32_t key)
{
    struct wbuf w = {out, cap, 0, 0};
    wbuf_begin(&w, 'K');
    wbuf_u32(&w, pid);
    wbuf_u32(&w, key);
    return wbuf_finish(&w, 0, 1);
}

size_t
pgw_build_cancel(uint8_t *out, size_t cap, uint32_t pid, uint32_t key)
{
    struct wbuf w = {out, cap, 0, 0};
    wbuf_u32(&w, 0);
    wbuf_u32(&w, PGW_CODE_CANCEL);
    wbuf_u32(&w, pid);
    wbuf_u32(&w, key);
    return wbuf_finish(&w, 0, 0);
}

size_t
pgw_build_ssl_request(uint8_t *out, size_t cap)
{
    struct wbuf w = {out, cap, 0, 0};
    wbuf_u32(&w, 0);
    wbuf_u32(&w, PGW_CODE_SSL);
    return wbuf_finish(&w, 0, 0);
}

size_t
pgw_build_startup(uint8_t *out, size_t cap, const struct pgw_param *params, size_t nparams)
{
    struct wbuf w = {out, cap, 0, 0};
    wbuf_u32(&w, 0);
    wbuf_u32(&w, PGW_PROTO_30);
    for (size_t i = 0; i < nparams; i++) {
        const char *name = params[i].name, *value = params[i].value;
        /* An empty name would end the list early. */
        if (name == NULL || value == NULL || name[0] == '\0')
            continue;
        if (strncmp(name, "_pq_.", 5) == 0)
            continue;
        wbuf_cstr(&w, name);
        wbuf_cstr(&w, value);
    }
    wbuf_byte(&w, 0);
    if (w.failed || w.pos > PGW_STARTUP_MAX_LEN)
        return 0; /* a server would refuse it */
    return wbuf_finish(&w, 0, 0);
}

size_t
pgw_build_terminate(uint8_t *out, size_t cap)
{
    struct wbuf w = {out, cap, 0, 0};
    wbuf_begin(&w, 'X');
    return wbuf_finish(&w, 0, 1);
}

size_t
pgw_build_query(uint8_t *out, size_t cap, const char *sql)
{
    struct wbuf w = {out, cap, 0, 0};
    wbuf_begin(&w, 'Q');
    wbuf_cstr(&w, sql);
    return wbuf_finish(&w, 0, 1);
}

size_t
pgw_build_ready(uint8_t *out, size_t cap, uint8_t status)
{
    if (status != 'I' && status != 'T' && status != 'E')
        return 0;
    struct wbuf w = {out, cap, 0, 0};
    wbuf_begin(&w, 'Z');
    wbuf_byte(&w, status);
    return wbuf_finish(&w, 0, 1);
}

/* ------------------------------------------------------------------ */
/* A unit's statement call, for running it again.                    */

static uint16_t
rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* Parse: name, query, the declared parameter types. */
static enum pgw_status
call_parse(const uint8_t *b, size_t len, struct pgw_call *call)
{
    ptrdiff_t n = cstr_len(b, len);
    if (n < 0)
        return PGW_ERROR;
    size_t off = (size_t)n + 1;
    ptrdiff_t q = cstr_len(b + off, len - off);
    if (q < 0)
        return PGW_ERROR;
    call->sql = (const char *)b + off;
    off += (size_t)q + 1;
    if (len - off < 2)
        return PGW_ERROR;
    uint16_t ntypes = rd16(b + off);
    off += 2;
    if (ntypes > PGW_CALL_MAX_PARAMS || len - off != (size_t)ntypes * 4)
        return PGW_ERROR;
    for (uint16_t i = 0; i < ntypes; i++)
        call->param_types[i] = rd32(b + off + 4u * i);
    call->ntypes = ntypes;
    return PGW_OK;
}

/* Bind: the unnamed portal only; the parameters' formats and values. */
static enum pgw_status
call_bind(const uint8_t *b, size_t len, struct pgw_call *call)
{
    ptrdiff_t portal = cstr_len(b, len);
    if (portal != 0)
        return PGW_ERROR; /* a named portal may be fetched from later: not one call */
    size_t off = 1;
    ptrdiff_t st = cstr_len(b + off, len - off);
    if (st < 0)
        return PGW_ERROR;
    off += (size_t)st + 1;
    if (len - off < 2)
        return PGW_ERROR;
    uint16_t nformats = rd16(b + off);
    off += 2;
    if (len - off < (size_t)nformats * 2 + 2)
        return PGW_ERROR;
    const uint8_t *formats = b + off;
    off += (size_t)nformats * 2;
    uint16_t nparams = rd16(b + off);
    off += 2;
    if (nparams > PGW_CALL_MAX_PARAMS || (nformats > 1 && nformats != nparams))
        return PGW_ERROR;
    for (uint16_t i = 0; i < nparams; i++) {
        uint16_t f = nformats == 0 ? 0 : rd16(formats + 2u * (nformats == 1 ? 0 : i));
        if (f > 1 || len - off < 4)
            return PGW_ERROR;
        int32_t vlen = (int32_t)rd32(b + off);
        off += 4;
        if (vlen < -1 || (vlen > 0 && len - off < (size_t)vlen))
            return PGW_ERROR;
        call->param_formats[i] = f;
        call->values[i] = vlen < 0 ? NULL : (const char *)b + off;
        call->lengths[i] = vlen < 0 ? 0 : vlen;
        off += vlen > 0 ? (size_t)vlen : 0;
    }
    call->nparams = nparams;
    if (len - off < 2)
        return PGW_ERROR;
    uint16_t nresults = rd16(b + off);
    off += 2;
    return len - off == (size_t)nresults * 2 ? PGW_OK : PGW_ERROR;
}

enum pgw_status
pgw_call_decode(const uint8_t *unit, size_t len, struct pgw_call *call)
{
    int parsed = 0, bound = 0, executed = 0, synced = 0;
    size_t off = 0, sqllen;

    /* the arrays are filled as far as the counts say: not cleared */
    call->simple = 0;
    call->sql = NULL;
    call->nparams = call->ntypes = 0;
    while (off < len) {
        if (len - off < PGW_HEADER_LEN || synced)
            return PGW_ERROR;
        uint8_t type = unit[off];
        uint32_t mlen = rd32(unit + off + 1);
        if (mlen < 4 || mlen - 4 > len - off - PGW_HEADER_LEN)
            return PGW_ERROR;
        const uint8_t *body = unit + off + PGW_HEADER_LEN;
        size_t blen = mlen - 4;
        off += PGW_HEADER_LEN + blen;
        switch (type) {
        case 'Q':
            if (parsed || bound || off != len)
                return PGW_ERROR;
            call->simple = 1;
            return pgw_query_parse(body, blen, &call->sql, &sqllen);
        case 'P':
            if (parsed++ || bound || call_parse(body, blen, call) != PGW_OK)
                return PGW_ERROR;
            break;
        case 'B':
            if (bound++ || call_bind(body, blen, call) != PGW_OK)
                return PGW_ERROR;
            break;
        case 'D':
            break;
        case 'E':
            /* the whole result: a row limit means the portal is fetched in parts */
            if (!bound || executed++ || blen != 5 || body[0] != '\0' || rd32(body + 1) != 0)
                return PGW_ERROR;
            break;
        case 'S':
            synced = 1;
            break;
        default:
            return PGW_ERROR;
        }
    }
    return synced && executed ? PGW_OK : PGW_ERROR;
}
