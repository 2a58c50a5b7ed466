/* coordinator/admin.c: see admin.h. A command lives on the heap of the connection thread that
 * asked; the loop takes it from the queue, runs it and marks it done under the mutex. */
#include "coordinator/admin.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

enum cmd_op { OP_VIEW, OP_DRAIN, OP_REPLAN };
enum cmd_state { CMD_QUEUED, CMD_TAKEN, CMD_DONE };

struct cmd {
    enum cmd_op op;
    enum cmd_state state;
    char worker[TX_PEER_MAX + 1];
    int status;
    char msg[256];
    struct admin_view view; /* OP_VIEW */
    struct cmd *next;
};

struct admin {
    struct admin_opts o;
    pthread_mutex_t mu;
    pthread_cond_t done;
    struct cmd *head, *tail;
    int stopped;
};

int admin_open(admin_t **out, const struct admin_opts *o, bt_err *e) {
    *out = NULL;
    if (!o->ops.view || !o->ops.drain || !o->ops.replan || !o->wake)
        return bt_fail(e, BT_EINVAL, "admin: every callback is required");
    admin_t *a = calloc(1, sizeof *a);
    if (!a) return bt_fail(e, -ENOMEM, "admin: out of memory");
    a->o = *o;
    if (!a->o.timeout_ms) a->o.timeout_ms = 10000;
    pthread_mutex_init(&a->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->done, &ca);
    pthread_condattr_destroy(&ca);
    *out = a;
    return 0;
}

void admin_close(admin_t *a) {
    if (!a) return;
    pthread_cond_destroy(&a->done);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

int admin_is_route(const char *path) {
    return !strncmp(path, "/admin/", 7);
}

void admin_serve(admin_t *a) {
    pthread_mutex_lock(&a->mu);
    struct cmd *list = a->head;
    a->head = a->tail = NULL;
    for (struct cmd *c = list; c; c = c->next)
        c->state = CMD_TAKEN;
    pthread_mutex_unlock(&a->mu);
    if (!list) return;
    /* Run outside the lock: the callbacks send messages and log. A command is only freed by
     * its asker after CMD_DONE, so list stays valid. */
    for (struct cmd *c = list; c; c = c->next) {
        switch (c->op) {
        case OP_VIEW:
            a->o.ops.view(a->o.ops.ctx, &c->view);
            c->status = 200;
            break;
        case OP_DRAIN:
            c->status = a->o.ops.drain(a->o.ops.ctx, c->worker, c->msg, sizeof c->msg);
            break;
        case OP_REPLAN:
            c->status = a->o.ops.replan(a->o.ops.ctx, c->msg, sizeof c->msg);
            break;
        }
    }
    pthread_mutex_lock(&a->mu);
    for (struct cmd *c = list, *next; c; c = next) {
        next = c->next;
        c->state = CMD_DONE;
    }
    pthread_cond_broadcast(&a->done);
    pthread_mutex_unlock(&a->mu);
}

void admin_stop(admin_t *a) {
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    a->stopped = 1;
    for (struct cmd *c = a->head; c; c = c->next) {
        c->state = CMD_DONE;
        c->status = 503;
        snprintf(c->msg, sizeof c->msg, "the coordinator is stopping");
    }
    a->head = a->tail = NULL;
    pthread_cond_broadcast(&a->done);
    pthread_mutex_unlock(&a->mu);
}

/* Queues c and waits for the loop. A command still queued at the timeout is withdrawn (503);
 * one the loop already took is waited for, since the loop finishes it within one turn. */
static void call_loop(admin_t *a, struct cmd *c) {
    pthread_mutex_lock(&a->mu);
    if (a->stopped) {
        pthread_mutex_unlock(&a->mu);
        c->status = 503;
        snprintf(c->msg, sizeof c->msg, "the coordinator is stopping");
        return;
    }
    c->state = CMD_QUEUED;
    c->next = NULL;
    if (a->tail)
        a->tail->next = c;
    else
        a->head = c;
    a->tail = c;
    pthread_mutex_unlock(&a->mu);
    a->o.wake(a->o.wake_ctx);
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += a->o.timeout_ms / 1000;
    until.tv_nsec += (long)(a->o.timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&a->mu);
    while (c->state != CMD_DONE) {
        if (c->state == CMD_QUEUED &&
            pthread_cond_timedwait(&a->done, &a->mu, &until) == ETIMEDOUT &&
            c->state == CMD_QUEUED) {
            struct cmd **pp = &a->head, *prev = NULL;
            while (*pp != c)
                prev = *pp, pp = &(*pp)->next;
            *pp = c->next;
            if (a->tail == c) a->tail = prev;
            c->status = 503;
            snprintf(c->msg, sizeof c->msg, "the coordinator did not answer within %d ms",
                     a->o.timeout_ms);
            break;
        }
        if (c->state == CMD_TAKEN) pthread_cond_wait(&a->done, &a->mu);
    }
    pthread_mutex_unlock(&a->mu);
}

/* Loopback peers only: 127.0.0.0/8, ::1 and IPv4-mapped 127/8. */
static int peer_is_loopback(int fd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &len)) return 0;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)&ss)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a6)) return 1;
        return IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127;
    }
    return 0;
}

static void reply(struct http_resp *rs, int status, cJSON *j) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    rs->status = s ? status : 500;
    rs->body = s;
    rs->body_len = s ? strlen(s) : 0;
}

static void reply_msg(struct http_resp *rs, int status, const char *key, const char *msg,
                      const char *worker) {
    cJSON *j = cJSON_CreateObject();
    if (j) {
        if (worker) cJSON_AddStringToObject(j, "worker", worker);
        cJSON_AddStringToObject(j, key, msg);
    }
    reply(rs, status, j);
}

static cJSON *view_json(const struct admin_view *v) {
    cJSON *j = cJSON_CreateObject(), *ws = cJSON_CreateArray();
    if (!j || !ws) {
        cJSON_Delete(j);
        cJSON_Delete(ws);
        return NULL;
    }
    cJSON_AddStringToObject(j, "status", v->status ? v->status : "unknown");
    char pid[24];
    snprintf(pid, sizeof pid, "%llu", (unsigned long long)v->plan_id); /* beyond 2^53 */
    cJSON_AddStringToObject(j, "plan_id", pid);
    cJSON_AddNumberToObject(j, "stages", v->n_stages);
    cJSON_AddItemToObject(j, "workers", ws);
    for (int i = 0; i < v->n_workers; i++) {
        const struct admin_worker *w = &v->w[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) break;
        cJSON_AddStringToObject(o, "id", w->id);
        cJSON_AddStringToObject(o, "host", w->host);
        cJSON_AddStringToObject(o, "state", w->state ? w->state : "unknown");
        if (w->stage >= 0) {
            cJSON_AddNumberToObject(o, "stage", w->stage);
            cJSON *layers = cJSON_CreateArray();
            if (layers) {
                cJSON_AddItemToArray(layers, cJSON_CreateNumber(w->lo));
                cJSON_AddItemToArray(layers, cJSON_CreateNumber(w->hi));
                cJSON_AddItemToObject(o, "layers", layers);
            }
        } else {
            cJSON_AddNullToObject(o, "stage");
        }
        cJSON_AddNumberToObject(o, "mem_budget_bytes", (double)w->mem_budget);
        cJSON_AddBoolToObject(o, "local_model", w->has_model);
        cJSON_AddItemToArray(ws, o);
    }
    return j;
}

void admin_handle(admin_t *a, const struct http_req *rq, struct http_resp *rs) {
    if (!a->o.allow_remote && !peer_is_loopback(rq->fd)) {
        reply_msg(rs, 403, "error", "admin endpoints answer loopback clients only", NULL);
        return;
    }
    const char *p = rq->path + 6; /* after "/admin" */
    int get = !strcmp(rq->method, "GET"), post = !strcmp(rq->method, "POST");
    struct cmd *c = calloc(1, sizeof *c);
    if (!c) {
        rs->status = 500;
        return;
    }
    const char *want = NULL;
    if (!strcmp(p, "/workers")) {
        c->op = OP_VIEW;
        want = get ? NULL : "GET";
    } else if (!strcmp(p, "/replan")) {
        c->op = OP_REPLAN;
        want = post ? NULL : "POST";
    } else if (!strncmp(p, "/workers/", 9)) {
        const char *id = p + 9, *slash = strchr(id, '/');
        size_t n = slash ? (size_t)(slash - id) : 0;
        if (!slash || strcmp(slash, "/drain") || n == 0 || n > TX_PEER_MAX) {
            reply_msg(rs, 404, "error", "no such admin route", NULL);
            free(c);
            return;
        }
        c->op = OP_DRAIN;
        memcpy(c->worker, id, n);
        c->worker[n] = 0;
        want = post ? NULL : "POST";
    } else {
        reply_msg(rs, 404, "error", "no such admin route", NULL);
        free(c);
        return;
    }
    if (want) {
        char m[64];
        snprintf(m, sizeof m, "use %s for this route", want);
        reply_msg(rs, 405, "error", m, NULL);
        free(c);
        return;
    }
    call_loop(a, c);
    if (c->op == OP_VIEW && c->status == 200)
        reply(rs, 200, view_json(&c->view));
    else
        reply_msg(rs, c->status, c->status < 400 ? "result" : "error", c->msg,
                  c->op == OP_DRAIN ? c->worker : NULL);
    free(c);
}
