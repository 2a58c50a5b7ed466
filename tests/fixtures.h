/* tests/fixtures.h: where the shared reference fixtures live, for tests. Looks at $BT_FIXTURES,
 * then ../shared/fixtures next to the checkout, then /work/shared/fixtures; a test that needs
 * them fails (never skips) when none exists. */
#ifndef BT_TESTS_FIXTURES_H
#define BT_TESTS_FIXTURES_H
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline const char *fixtures_dir(void) {
    static char dir[4096];
    if (dir[0]) return dir;
    const char *env = getenv("BT_FIXTURES");
    const char *cands[] = {env, "../shared/fixtures", "../../shared/fixtures",
                           "/work/shared/fixtures"};
    for (size_t i = 0; i < sizeof cands / sizeof *cands; i++) {
        char probe[4200];
        if (!cands[i]) continue;
        snprintf(probe, sizeof probe, "%s/tiny-a/model.json", cands[i]);
        if (access(probe, R_OK) == 0) {
            if (!realpath(cands[i], dir)) snprintf(dir, sizeof dir, "%s", cands[i]);
            return dir;
        }
    }
    cr_assert_fail("fixtures not found: set BT_FIXTURES to the shared/fixtures folder");
    return NULL;
}

/* fixture_path("tiny-a/gguf/model-f32.gguf") -> absolute path in a static rotating buffer. */
static inline const char *fixture_path(const char *rel) {
    static char bufs[8][4400];
    static int next;
    char *b = bufs[next++ & 7];
    snprintf(b, sizeof bufs[0], "%s/%s", fixtures_dir(), rel);
    return b;
}
#endif
