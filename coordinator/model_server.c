/* coordinator/model_server.c: see model_server.h. */
#include "coordinator/model_server.h"

#include "common/log.h"
#include "engine/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

struct model_server {
    int fd;
    char path[1024];
    struct model_ident_c id;
    uint64_t served;
};

static int read_all(int fd, void *buf, size_t len, uint64_t off) {
    for (size_t have = 0; have < len;) {
        ssize_t r = pread(fd, (char *)buf + have, len - have, (off_t)(off + have));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return r < 0 ? -errno : BT_EFORMAT;
        have += (size_t)r;
    }
    return 0;
}

int model_server_open(model_server_t **out, const char *path, bt_err *e) {
    *out = NULL;
    model_server_t *ms = calloc(1, sizeof *ms);
    if (!ms) return bt_fail(e, -ENOMEM, "model_server: out of memory");
    ms->fd = -1;
    snprintf(ms->path, sizeof ms->path, "%s", path);
    gguf_t *g = NULL;
    unsigned char *head = NULL;
    int rc = gguf_open(&g, path, e);
    if (rc) goto fail;
    uint64_t off = gguf_data_offset(g);
    ms->id.size = gguf_file_size(g);
    gguf_free(g);
    if ((ms->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        rc = bt_fail(e, -errno, "%s: open: %s", path, strerror(errno));
        goto fail;
    }
    if (!(head = malloc(off ? (size_t)off : 1))) {
        rc = bt_fail(e, -ENOMEM, "%s: %llu header bytes", path, (unsigned long long)off);
        goto fail;
    }
    if ((rc = read_all(ms->fd, head, (size_t)off, 0))) {
        bt_fail(e, rc, "%s: reading the head (%llu bytes) failed", path, (unsigned long long)off);
        goto fail;
    }
    ms->id.header_xxh3 = XXH3_64bits(head, (size_t)off);
    free(head);
    const char *base = strrchr(path, '/');
    snprintf(ms->id.name, sizeof ms->id.name, "%s", base ? base + 1 : path);
    *out = ms;
    return 0;
fail:
    free(head);
    model_server_close(ms);
    return rc;
}

void model_server_close(model_server_t *ms) {
    if (!ms) return;
    if (ms->fd >= 0) close(ms->fd);
    free(ms);
}

const struct model_ident_c *model_server_ident(const model_server_t *ms) {
    return &ms->id;
}

uint64_t model_server_bytes_served(const model_server_t *ms) {
    return ms->served;
}

static void free_bytes(void *data, void *hint) {
    (void)hint;
    free(data);
}

static int reply_error(transport_t *t, const char *peer, uint64_t rid, int code, const char *text,
                       bt_err *e) {
    Baton__Envelope env;
    Baton__Error em;
    msg_error_reply(&env, &em, rid, code, text);
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = msg_pack(&env, &buf, &len, e);
    if (rc) return rc;
    struct tx_frame f = {.data = buf, .len = len, .free_fn = free_bytes};
    return transport_send(t, peer, &f, 1, e);
}

int model_server_answer(model_server_t *ms, transport_t *t, const char *peer, uint64_t request_id,
                        const Baton__ModelChunkRequest *rq, bt_err *e) {
    char why[256];
    const Baton__ModelId *mid = rq->model;
    if (!mid || mid->size != ms->id.size || mid->header_xxh3 != ms->id.header_xxh3) {
        snprintf(why, sizeof why, "model %.60s size=%llu xxh3=%016llx is not the served %.100s",
                 mid && mid->name ? mid->name : "?", mid ? (unsigned long long)mid->size : 0ull,
                 mid ? (unsigned long long)mid->header_xxh3 : 0ull, ms->id.name);
        BT_LOG(WARN, "model", "chunk request from %s: %s", peer, why);
        return reply_error(t, peer, request_id, BT_EPROTO, why, e);
    }
    if (rq->length == 0 || rq->length > MSG_MAX_CHUNK || rq->offset > ms->id.size ||
        rq->length > ms->id.size - rq->offset) {
        snprintf(why, sizeof why, "chunk offset=%llu length=%llu outside %llu bytes (max %u)",
                 (unsigned long long)rq->offset, (unsigned long long)rq->length,
                 (unsigned long long)ms->id.size, MSG_MAX_CHUNK);
        BT_LOG(WARN, "model", "chunk request from %s: %s", peer, why);
        return reply_error(t, peer, request_id, BT_EPROTO, why, e);
    }
    void *data = malloc((size_t)rq->length);
    if (!data) return reply_error(t, peer, request_id, -ENOMEM, "coordinator out of memory", e);
    int rc = read_all(ms->fd, data, (size_t)rq->length, rq->offset);
    if (rc) {
        free(data);
        snprintf(why, sizeof why, "%.100s: read at %llu failed: %.80s", ms->id.name,
                 (unsigned long long)rq->offset, bt_strerror(rc));
        BT_LOG(ERROR, "model", "%s", why);
        return reply_error(t, peer, request_id, rc, why, e);
    }
    Baton__Envelope env;
    msg_init(&env, request_id);
    Baton__ModelChunk mc;
    baton__model_chunk__init(&mc);
    Baton__ModelId id;
    baton__model_id__init(&id);
    id.name = ms->id.name;
    id.size = ms->id.size;
    id.header_xxh3 = ms->id.header_xxh3;
    mc.model = &id;
    mc.offset = rq->offset;
    mc.length = rq->length;
    mc.xxh3 = XXH3_64bits(data, (size_t)rq->length);
    env.body_case = BATON__ENVELOPE__BODY_MODEL_CHUNK;
    env.model_chunk = &mc;
    uint8_t *buf = NULL;
    size_t len = 0;
    if ((rc = msg_pack(&env, &buf, &len, e))) {
        free(data);
        return rc;
    }
    struct tx_frame f[2] = {{.data = buf, .len = len, .free_fn = free_bytes},
                            {.data = data, .len = (size_t)rq->length, .free_fn = free_bytes}};
    rc = transport_send(t, peer, f, 2, e);
    if (!rc) ms->served += rq->length;
    BT_LOG(DEBUG, "model", "chunk to %s offset=%llu length=%llu rc=%d", peer,
           (unsigned long long)rq->offset, (unsigned long long)rq->length, rc);
    return rc;
}
