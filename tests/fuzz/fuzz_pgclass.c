/*
 * fuzz_pgclass.c - libFuzzer harness: classify the input as SQL text.
 *
 * The input is copied into a NUL-terminated buffer (a Query message's
 * string is NUL-terminated; bytes after an embedded NUL are not seen) and
 * classified once, with a user write-function list so that path runs too.
 * Beyond not crashing, the answer must keep the header's promises.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/pgclass.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const fns[] = {"audit_log", "app.charge"};
    const struct pgclass_opts opts = {.write_fns = fns, .nwrite_fns = 2, .max_len = 64 * 1024};
    struct pgclass_result r;
    char *sql = malloc(size + 1);

    if (sql == NULL)
        return 0;
    memcpy(sql, data, size);
    sql[size] = '\0';
    pgclass_classify(sql, &opts, &r);
    free(sql);

    if ((unsigned)r.kind >= REQ_KIND__COUNT)
        abort();
    if (r.parse_error && (r.kind != REQ_KIND_WRITE || r.nstatements != 0))
        abort();
    if (r.too_long && !r.parse_error)
        abort();
    if ((r.hint & PGCLASS_HINT_SHADOW) &&
        (r.hint & (PGCLASS_HINT_PRIMARY | PGCLASS_HINT_NOSHADOW)))
        abort();
    if (r.hint & ~(PGCLASS_HINT_PRIMARY | PGCLASS_HINT_SHADOW | PGCLASS_HINT_NOSHADOW))
        abort();
    if (r.no_mirror && r.kind != REQ_KIND_SESSION)
        abort();
    return 0;
}
