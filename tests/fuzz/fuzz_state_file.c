/*
 * fuzz_state_file.c - libFuzzer harness for the state file's codec
 * (control/state_file.c).
 *
 * One call per input: decode it; when accepted, the document must encode,
 * decode again to the same text (encode is a fixed point), and plan
 * against a small configuration without crashing, whatever it says.
 * Invariants are checked with abort() so a violation is a crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "control/state_file.h"

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond))                                                                         \
            abort();                                                                         \
    } while (0)

static const char conf_text[] = "backend blue { address 127.0.0.1:5432; }\n"
                                "backend green { address 127.0.0.1:5433; }\n"
                                "listener pg { listen 127.0.0.1:6432; primary blue; "
                                "shadow green; }\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct conf *conf;
    struct state_doc doc, again;
    char err[600];

    if (conf == NULL) {
        struct conf_errors errs;
        memset(&errs, 0, sizeof(errs));
        conf = conf_load_buffer("fuzz.conf", conf_text, strlen(conf_text), &errs);
        CHECK(conf != NULL);
    }
    if (state_file_decode((const char *)data, size, &doc, err, sizeof(err)) != 0) {
        CHECK(err[0] != '\0' && doc.listeners == NULL);
        return 0;
    }
    char *text = state_file_encode(&doc);
    CHECK(text != NULL);
    CHECK(state_file_decode(text, strlen(text), &again, err, sizeof(err)) == 0);
    char *text2 = state_file_encode(&again);
    CHECK(text2 != NULL && strcmp(text, text2) == 0);
    struct state_plan_listener plan[1];
    (void)state_file_plan(&doc, conf, plan, err, sizeof(err));
    free(text);
    free(text2);
    state_doc_release(&doc);
    state_doc_release(&again);
    return 0;
}
