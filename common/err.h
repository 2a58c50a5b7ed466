/* common/err.h: error codes and the bt_err detail record.
 * Fallible functions return 0 or a negative code: a negated errno (-ENOMEM) for syscall
 * failures, or one of the BT_E* codes below (all <= -5000). Detail text goes into a
 * caller-provided bt_err (may be NULL). bt_fail() fills it and returns the code, so a
 * failure is one line: return bt_fail(e, BT_EFORMAT, "tensor %s: n_dims=%u > 4", n, d); */
#ifndef BT_COMMON_ERR_H
#define BT_COMMON_ERR_H

enum {
    BT_EFORMAT = -5000, /* malformed bytes (file, message, request) */
    BT_EVERSION,        /* unsupported format or protocol version */
    BT_ESHAPE,          /* tensor shape or hyperparameter mismatch */
    BT_EPROTO,          /* protocol violation by a peer */
    BT_ECAPACITY,       /* out of slots, memory budget or queue space */
    BT_ECANCELED,       /* request cancelled */
    BT_EPEERLOST,       /* peer stopped answering */
    BT_EMSGSIZE,        /* message or frame too large */
    BT_ENOKEY,          /* metadata key or tensor absent */
    BT_ETYPE,           /* value has the wrong type */
    BT_EUNSUPPORTED,    /* valid input we do not handle (e.g. an unknown dtype) */
    BT_ETIMEDOUT,       /* deadline passed */
    BT_EINVAL,          /* bad argument from our own caller or a user flag */
    BT_ECHECKSUM,       /* data does not match its known checksum */
};

typedef struct bt_err {
    int code;
    char msg[256];
} bt_err;

/* Fills e (if non-NULL) with code and a printf-formatted message; returns code. */
int bt_fail(bt_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Static text for a code (negated errno or BT_E*). */
const char *bt_strerror(int code);
/* The message of e if set, else bt_strerror(code). */
const char *bt_errmsg(const bt_err *e, int code);

#endif
