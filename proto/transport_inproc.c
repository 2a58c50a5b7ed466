/* proto/transport_inproc.c: in-process backend with the ZMQ backend's semantics, for tests
 * and single-process pipelines. A process-wide registry (one mutex) holds every open inproc
 * transport; a server is found by its endpoint name, a client by (server name, identity).
 * Each transport has a FIFO of messages and a semaphore eventfd whose count equals the queue
 * length, so it polls readable exactly while a message waits (and mixes with zmq sockets in
 * zmq_poll). Frames with a free_fn move without copying; others are copied at send.
 * Differences from ZMQ: a client's send to a server not (yet) bound fails with BT_EPEERLOST
 * instead of queueing, and queues are unbounded (no high-water mark). */
#include "proto/transport_impl.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct node {
    struct node *next;
    char peer[TX_PEER_MAX + 1];
    int n;
    struct tx_frame f[TX_MAX_FRAMES]; /* each with a free_fn: ours (copies) or the sender's */
};

struct ibe {
    struct ibe *next_reg; /* registry list */
    transport_t *t;
    struct node *head, *tail;
    int evfd;
    struct node *held; /* lent to the caller until release */
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct ibe *reg;

static void free_copy(void *data, void *hint) {
    (void)hint;
    free(data);
}

static void node_free(struct node *nd) {
    if (!nd) return;
    for (int i = 0; i < nd->n; i++)
        nd->f[i].free_fn((void *)(uintptr_t)nd->f[i].data, nd->f[i].hint);
    free(nd);
}

static struct ibe *find_server(const char *name) {
    for (struct ibe *b = reg; b; b = b->next_reg)
        if (b->t->o.role == TRANSPORT_SERVER && strcmp(b->t->o.endpoint, name) == 0) return b;
    return NULL;
}

static struct ibe *find_client(const char *name, const char *id) {
    for (struct ibe *b = reg; b; b = b->next_reg)
        if (b->t->o.role == TRANSPORT_CLIENT && strcmp(b->t->o.endpoint, name) == 0 &&
            strcmp(b->t->o.identity, id) == 0)
            return b;
    return NULL;
}

static int iopen(transport_t *t, bt_err *e) {
    struct ibe *b = calloc(1, sizeof *b);
    if (!b) return bt_fail(e, -ENOMEM, "transport inproc %s", t->o.endpoint);
    b->t = t;
    b->evfd = eventfd(0, EFD_NONBLOCK | EFD_SEMAPHORE | EFD_CLOEXEC);
    if (b->evfd < 0) {
        int err = errno;
        free(b);
        return bt_fail(e, -err, "transport inproc %s: eventfd: %s", t->o.endpoint, strerror(err));
    }
    pthread_mutex_lock(&reg_mu);
    int taken = t->o.role == TRANSPORT_SERVER ? find_server(t->o.endpoint) != NULL
                                              : find_client(t->o.endpoint, t->o.identity) != NULL;
    if (!taken) {
        b->next_reg = reg;
        reg = b;
    }
    pthread_mutex_unlock(&reg_mu);
    if (taken) {
        close(b->evfd);
        free(b);
        return bt_fail(e, -EADDRINUSE, "transport inproc %s: %s%s already open", t->o.endpoint,
                       t->o.role == TRANSPORT_SERVER ? "server" : "client ", t->o.identity);
    }
    snprintf(t->bound, sizeof t->bound, "inproc:%s", t->o.endpoint);
    t->be = b;
    return 0;
}

static void irelease(transport_t *t) {
    struct ibe *b = t->be;
    node_free(b->held);
    b->held = NULL;
}

static void iclose(transport_t *t) {
    struct ibe *b = t->be;
    pthread_mutex_lock(&reg_mu);
    for (struct ibe **p = &reg; *p; p = &(*p)->next_reg)
        if (*p == b) {
            *p = b->next_reg;
            break;
        }
    pthread_mutex_unlock(&reg_mu);
    /* unregistered: no sender can reach the queue any more */
    for (struct node *nd = b->head, *next; nd; nd = next) {
        next = nd->next;
        node_free(nd);
    }
    node_free(b->held);
    close(b->evfd);
    free(b);
}

static int isend(transport_t *t, const char *peer, const struct tx_frame *f, int n, int dontwait,
                 bt_err *e) {
    (void)dontwait; /* queues are unbounded: a send never waits */
    struct node *nd = calloc(1, sizeof *nd);
    int rc = 0;
    if (!nd) {
        rc = bt_fail(e, -ENOMEM, "transport %s: message node", t->bound);
        goto fail;
    }
    /* the receiver sees the sender's identity, or "" when the server sent it */
    snprintf(nd->peer, sizeof nd->peer, "%s", t->o.role == TRANSPORT_CLIENT ? t->o.identity : "");
    for (int i = 0; i < n; i++) {
        if (f[i].free_fn) {
            nd->f[i] = f[i];
        } else {
            void *copy = malloc(f[i].len ? f[i].len : 1);
            if (!copy) {
                rc = bt_fail(e, -ENOMEM, "transport %s: frame %d of %zu bytes", t->bound, i,
                             f[i].len);
                goto fail;
            }
            if (f[i].len) memcpy(copy, f[i].data, f[i].len);
            nd->f[i] = (struct tx_frame){copy, f[i].len, free_copy, NULL};
        }
        nd->n = i + 1;
    }
    pthread_mutex_lock(&reg_mu);
    struct ibe *dst = t->o.role == TRANSPORT_CLIENT ? find_server(t->o.endpoint)
                                                    : find_client(t->o.endpoint, peer);
    if (dst) {
        if (dst->tail)
            dst->tail->next = nd;
        else
            dst->head = nd;
        dst->tail = nd;
        uint64_t one = 1;
        ssize_t w = write(dst->evfd, &one, sizeof one); /* cannot fail below 2^64-1 queued */
        (void)w;
    }
    pthread_mutex_unlock(&reg_mu);
    if (!dst) {
        node_free(nd);
        return bt_fail(e, BT_EPEERLOST, "transport %s: peer %s not connected", t->bound,
                       peer[0] ? peer : "(server)");
    }
    return 0;
fail:
    /* frames already in the node are freed through it; the rest (owned ones) here */
    if (nd) {
        int done = nd->n;
        node_free(nd);
        for (int i = done; i < n; i++)
            if (f[i].free_fn) f[i].free_fn((void *)(uintptr_t)f[i].data, f[i].hint);
    } else {
        for (int i = 0; i < n; i++)
            if (f[i].free_fn) f[i].free_fn((void *)(uintptr_t)f[i].data, f[i].hint);
    }
    return rc;
}

static int irecv_nowait(transport_t *t, struct tx_msg *out, bt_err *e) {
    (void)e;
    struct ibe *b = t->be;
    pthread_mutex_lock(&reg_mu);
    struct node *nd = b->head;
    if (nd) {
        b->head = nd->next;
        if (!b->head) b->tail = NULL;
        uint64_t v;
        ssize_t r = read(b->evfd, &v, sizeof v); /* semaphore: takes exactly 1 */
        (void)r;
    }
    pthread_mutex_unlock(&reg_mu);
    if (!nd) return BT_ETIMEDOUT;
    b->held = nd;
    memcpy(out->peer, nd->peer, sizeof out->peer);
    out->n_frames = nd->n;
    for (int i = 0; i < nd->n; i++) {
        out->data[i] = nd->f[i].data;
        out->len[i] = nd->f[i].len;
    }
    return 0;
}

static void ipollitem(transport_t *t, zmq_pollitem_t *item) {
    struct ibe *b = t->be;
    *item = (zmq_pollitem_t){.socket = NULL, .fd = b->evfd, .events = ZMQ_POLLIN};
}

const struct tx_backend_ops tx_inproc_ops = {
    .name = "inproc",
    .open = iopen,
    .close = iclose,
    .send = isend,
    .recv_nowait = irecv_nowait,
    .release = irelease,
    .pollitem = ipollitem,
};
