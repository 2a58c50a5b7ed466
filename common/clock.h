/* common/clock.h: monotonic time for deadlines and timings. */
#ifndef BT_COMMON_CLOCK_H
#define BT_COMMON_CLOCK_H
#include <stdint.h>
#include <time.h>

static inline int64_t bt_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline double bt_now_s(void) {
    return (double)bt_now_ns() * 1e-9;
}

#endif
