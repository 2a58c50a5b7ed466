/* common/err.c: see err.h. */
#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int bt_fail(bt_err *e, int code, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

const char *bt_strerror(int code) {
    switch (code) {
    case 0:
        return "ok";
    case BT_EFORMAT:
        return "malformed data";
    case BT_EVERSION:
        return "unsupported version";
    case BT_ESHAPE:
        return "shape mismatch";
    case BT_EPROTO:
        return "protocol error";
    case BT_ECAPACITY:
        return "out of capacity";
    case BT_ECANCELED:
        return "cancelled";
    case BT_EPEERLOST:
        return "peer lost";
    case BT_EMSGSIZE:
        return "message too large";
    case BT_ENOKEY:
        return "no such key";
    case BT_ETYPE:
        return "wrong type";
    case BT_EUNSUPPORTED:
        return "unsupported";
    case BT_ETIMEDOUT:
        return "timed out";
    case BT_EINVAL:
        return "invalid argument";
    case BT_ECHECKSUM:
        return "checksum mismatch";
    default:
        return code < 0 && code > -4096 ? strerror(-code) : "unknown error";
    }
}

const char *bt_errmsg(const bt_err *e, int code) {
    return e && e->code == code && e->msg[0] ? e->msg : bt_strerror(code);
}
