/* common/assert.h: always-on invariant checks for our own logic. Never use these on bytes
 * that come from a file or the network: those are validated and rejected with an error. */
#ifndef BT_COMMON_ASSERT_H
#define BT_COMMON_ASSERT_H
#include <stdio.h>
#include <stdlib.h>

#define BT_PANIC(...)                                                                              \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: panic: ", __FILE__, __LINE__);                                     \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        abort();                                                                                   \
    } while (0)

#define BT_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) BT_PANIC("assertion failed: %s", #cond);                                      \
    } while (0)

#endif
