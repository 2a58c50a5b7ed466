/* proto/msg.h: pack and unpack the Envelope of proto/baton.proto (protobuf-c), validated.
 *
 * msg_unpack() is the only way bytes from the network become a Baton__Envelope: it checks the
 * size cap, the protocol version, that a known body is present, and per-message field sanity
 * (repeated counts agree, totals bounded, lo < hi <= n_layers, known enum values, ...), so
 * callers may index repeated fields without re-checking. Payload frames (frames 1..k of a
 * transport message) are checked against the envelope by msg_check_payload().
 * Memory: unpacked messages live in a ProtobufCAllocator: NULL = malloc (free with
 * msg_free), or a struct msg_arena (a caller buffer; msg_free is then a no-op, the arena is
 * reset by the caller, so serving needs no malloc). Pure functions, thread-safe. */
#ifndef BT_PROTO_MSG_H
#define BT_PROTO_MSG_H
#include "common/err.h"

#include <stddef.h>
#include <stdint.h>
/* Note: the generated BATON__X__INIT macros cast away const (protobuf_c_empty_string) and
 * fail our -Wcast-qual -Werror build; initialise with the generated baton__x__init(&m). */
#include "proto/baton.pb-c.h"

#define MSG_PROTOCOL_VERSION 1u
#define MSG_MAX_BYTES        (4u << 20) /* packed envelope cap (frame 0) */
#define MSG_MAX_SEQS         4096u      /* sequences per Forward / Result / Cancel */
#define MSG_MAX_TOKENS       (1u << 20) /* rows per Forward: sum(n_tokens) */
#define MSG_MAX_HIDDEN       65536u     /* Forward.hidden */
#define MSG_MAX_LAYERS       4096u      /* n_layers, lo, hi */
#define MSG_MAX_STAGES       256u       /* Plan.stages, LoadLayers.n_stages */
#define MSG_MAX_LOGPROBS     20u        /* SamplingParams.logprobs, SeqResult.top */
#define MSG_MAX_STOP_TOKENS  64u
#define MSG_MAX_CHUNK        (64u << 20)  /* ModelChunk(Request).length */
#define MSG_MAX_STATE_FRAMES 64u          /* StateImport.frame_bytes entries */
#define MSG_MAX_FRAME_BYTES  (1ull << 32) /* any one payload frame */
#define MSG_MAX_STRING       1024u        /* ids, endpoints, names, error text */

/* Bump allocator over a caller buffer, usable as a ProtobufCAllocator. Allocation failure
 * (buffer full) makes msg_unpack fail with -ENOMEM. */
struct msg_arena {
    unsigned char *buf;
    size_t cap, used;
    int exhausted;            /* set when an allocation did not fit */
    ProtobufCAllocator alloc; /* filled by msg_arena_init; pass &a->alloc to msg_unpack */
};
void msg_arena_init(struct msg_arena *a, void *buf, size_t cap);
void msg_arena_reset(struct msg_arena *a); /* invalidates every message unpacked into it */

/* An envelope with version = MSG_PROTOCOL_VERSION and request_id set, body NOT_SET. */
void msg_init(Baton__Envelope *env, uint64_t request_id);

/* Packs env into a malloc'd buffer: *out (caller frees with free()), *len. BT_EINVAL if env
 * has no body; BT_EMSGSIZE if it would exceed MSG_MAX_BYTES. Does not validate fields
 * (msg_validate does, for tests and for paranoid senders). */
int msg_pack(const Baton__Envelope *env, uint8_t **out, size_t *len, bt_err *e);
/* Packs into buf[cap]; *len = bytes written. BT_EMSGSIZE if it does not fit. */
int msg_pack_into(const Baton__Envelope *env, void *buf, size_t cap, size_t *len, bt_err *e);

/* Unpacks and validates len bytes. alloc: NULL = malloc. On success *out is set (free with
 * msg_free(*out, alloc)); on failure *out = NULL and the code is:
 *   BT_EMSGSIZE (len > MSG_MAX_BYTES), BT_EFORMAT (not protobuf), BT_EVERSION (version differs;
 *   message "peer speaks protocol v7, we speak v1"), BT_EPROTO (no/unknown body, or a field
 *   fails the sanity rules), -ENOMEM (allocator exhausted).
 * On BT_EPROTO/BT_EVERSION *request_id (if non-NULL) is the envelope's id for the reply,
 * else 0. */
int msg_unpack(const void *data, size_t len, ProtobufCAllocator *alloc, Baton__Envelope **out,
               uint64_t *request_id, bt_err *e);
void msg_free(Baton__Envelope *env, ProtobufCAllocator *alloc); /* NULL ok */

/* The sanity rules msg_unpack applies, on an already-built envelope: version, body, fields. */
int msg_validate(const Baton__Envelope *env, bt_err *e);

/* Checks payload frames 1..n (sizes len[0..n-1]) against the envelope: Forward: none at stage
 * 0 (hidden == 0) or exactly one of sum(n_tokens) x hidden in wire_dtype; Result: one of
 * n_logit_rows x vocab f32 when n_logit_rows > 0; StateImport: one per frame_bytes entry with
 * that size; ModelChunk: one of length bytes; all others: none. BT_EPROTO on mismatch. */
int msg_check_payload(const Baton__Envelope *env, size_t n, const size_t *len, bt_err *e);

/* Stable code word for an error code: "version", "malformed", "protocol", "capacity", ... */
const char *msg_code_word(int code);

/* Builds an Error reply into *env, pointing at storage inside *err_msg and *text (both caller
 * owned, must outlive the pack): code word from code, message = text. */
void msg_error_reply(Baton__Envelope *env, Baton__Error *err_msg, uint64_t request_id, int code,
                     const char *text);

/* Short name of the body ("forward", "hello", ..., "none"). */
const char *msg_body_name(Baton__Envelope__BodyCase c);

#endif
