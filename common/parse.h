/* common/parse.h: parsers for numbers that users write on command lines (flags of the daemons
 * and of the `baton` CLI), so every program accepts the same spellings and rejects the same
 * junk. Pure functions, no state, thread-safe. Each returns 0 and writes *out, or BT_EINVAL
 * (leaving *out alone) with detail naming `what` (the flag) and the text in e (may be NULL). */
#ifndef BT_COMMON_PARSE_H
#define BT_COMMON_PARSE_H
#include "common/err.h"

#include <stdint.h>

/* A whole decimal number in [lo, hi], nothing after it ("12", "-3"; not "12k", "", "1e3"). */
int bt_parse_int(const char *what, const char *s, int lo, int hi, int *out, bt_err *e);

/* A whole decimal number with an optional fraction in [lo, hi] ("1", "0.25"; not "", "1x",
 * "nan", "inf"). */
int bt_parse_double(const char *what, const char *s, double lo, double hi, double *out, bt_err *e);

/* A byte count > 0: a decimal number (fractions allowed) with an optional K, M, G or T suffix
 * (powers of 1024, either case), optionally followed by i and/or B: "512M", "8G", "1.5GiB",
 * "4096". */
int bt_parse_bytes(const char *what, const char *s, uint64_t *out, bt_err *e);

#endif
