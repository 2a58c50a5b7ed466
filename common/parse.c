/* common/parse.c: see parse.h. */
#include "common/parse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int bt_parse_int(const char *what, const char *s, int lo, int hi, int *out, bt_err *e) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return bt_fail(e, BT_EINVAL, "%s '%s': expected an integer in [%d, %d]", what, s, lo, hi);
    *out = (int)v;
    return 0;
}

int bt_parse_double(const char *what, const char *s, double lo, double hi, double *out, bt_err *e) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    /* !(v >= lo && v <= hi) also refuses NaN; hex floats and exponents are not for flags */
    if (errno || end == s || *end || !(v >= lo && v <= hi) || s[strcspn(s, "xXeEnNiI")])
        return bt_fail(e, BT_EINVAL, "%s '%s': expected a number in [%g, %g]", what, s, lo, hi);
    *out = v;
    return 0;
}

int bt_parse_bytes(const char *what, const char *s, uint64_t *out, bt_err *e) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    double mul = 1;
    if (errno || end == s || !(v > 0)) goto bad;
    switch (*end) {
    case 'k':
    case 'K':
        mul = 1024.0;
        end++;
        break;
    case 'm':
    case 'M':
        mul = 1024.0 * 1024;
        end++;
        break;
    case 'g':
    case 'G':
        mul = 1024.0 * 1024 * 1024;
        end++;
        break;
    case 't':
    case 'T':
        mul = 1024.0 * 1024 * 1024 * 1024;
        end++;
        break;
    default:
        break;
    }
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'b' || *end == 'B') end++;
    /* below 1 byte (e.g. "0.5") would truncate to 0; at or past 2^64 the cast is undefined */
    if (*end || v * mul < 1.0 || v * mul >= 18446744073709551616.0) goto bad;
    *out = (uint64_t)(v * mul);
    return 0;
bad:
    return bt_fail(e, BT_EINVAL, "%s '%s': expected bytes like 512M or 8G", what, s);
}
