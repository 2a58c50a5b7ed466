/* worker/main.c: the baton-worker daemon: flags, capability measurement, signals, then
 * worker_run (worker/worker.h). SIGINT/SIGTERM only call worker_stop (a flag and an eventfd
 * write), so the loop exits at its next wakeup and everything is closed on one path. */
#include "common/log.h"
#include "common/parse.h"
#include "common/signals.h"
#include "ops/ops.h"
#include "worker/caps.h"
#include "worker/worker.h"

#include <argp.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct args {
    const char *join, *model, *bind, *id, *cache_dir;
    uint64_t mem;
    int threads, max_rows;
};

static const struct argp_option options[] = {
    {"join", 'j', "ENDPOINT", 0, "coordinator, e.g. tcp://10.0.0.1:7700 (required)", 0},
    {"model", 'm', "FILE", 0, "local GGUF model file (default: stream from the coordinator)", 0},
    {"mem", 'M', "BYTES", 0, "memory budget for weights + state (512M, 8G; default 80% of RAM)", 0},
    {"threads", 't', "N", 0, "compute threads (default: all cores)", 0},
    {"bind", 'b', "ENDPOINT", 0, "data endpoint (default tcp://<address facing the coordinator>:*)",
     0},
    {"id", 'i', "NAME", 0, "worker id (default <hostname>-<pid>)", 0},
    {"cache-dir", 'c', "DIR", 0, "model cache directory (default /var/tmp/baton-cache)", 0},
    {"max-rows", 'r', "N", 0, "rows (tokens) accepted per Forward (default 2048)", 0},
    {0}};

static error_t parse_opt(int key, char *arg, struct argp_state *state) {
    struct args *a = state->input;
    switch (key) {
    case 'j':
        a->join = arg;
        break;
    case 'm':
        a->model = arg;
        break;
    case 'b':
        a->bind = arg;
        break;
    case 'i':
        a->id = arg;
        break;
    case 'c':
        a->cache_dir = arg;
        break;
    case 'M':
        if (bt_parse_bytes("--mem", arg, &a->mem, NULL))
            argp_error(state, "--mem %s: expected bytes like 512M or 8G", arg);
        break;
    case 't':
        a->threads = atoi(arg);
        break;
    case 'r':
        a->max_rows = atoi(arg);
        break;
    case ARGP_KEY_END:
        if (!a->join) argp_error(state, "--join is required");
        break;
    default:
        return ARGP_ERR_UNKNOWN;
    }
    return 0;
}

/* tcp://<local address the kernel would use to reach the coordinator>:* ; 127.0.0.1 for a
 * loopback coordinator. */
static void default_bind(const char *join, char *out, size_t cap) {
    char host[256] = "";
    const char *p = strstr(join, "://");
    p = p ? p + 3 : join;
    const char *colon = strrchr(p, ':');
    size_t n = colon ? (size_t)(colon - p) : strlen(p);
    if (n >= sizeof host) n = sizeof host - 1;
    memcpy(host, p, n);
    host[n] = 0;
    snprintf(out, cap, "tcp://127.0.0.1:*");
    if (!strncmp(host, "127.", 4) || !strcmp(host, "localhost")) return;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_DGRAM}, *ai = NULL;
    if (getaddrinfo(host, "9", &hints, &ai) || !ai) return;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in me;
    socklen_t ml = sizeof me;
    char ip[INET_ADDRSTRLEN];
    /* A UDP connect sends nothing: it only asks the kernel for the route's source address. */
    if (fd >= 0 && !connect(fd, ai->ai_addr, ai->ai_addrlen) &&
        !getsockname(fd, (struct sockaddr *)&me, &ml) &&
        inet_ntop(AF_INET, &me.sin_addr, ip, sizeof ip))
        snprintf(out, cap, "tcp://%s:*", ip);
    if (fd >= 0) close(fd);
    freeaddrinfo(ai);
}

static worker_t *g_worker;

static void on_signal(int sig) {
    (void)sig;
    if (g_worker) worker_stop(g_worker);
}

int main(int argc, char **argv) {
    bt_log_set_name("baton-worker");
    struct args a = {0};
    struct argp argp = {
        options, parse_opt, NULL, "baton-worker: one pipeline stage of a baton cluster",
        NULL,    NULL,      NULL};
    argp_parse(&argp, argc, argv, 0, NULL, &a);
    bt_err e = {0};
    int rc = ops_init(NULL, &e);
    if (rc) {
        BT_LOG(ERROR, "worker", "ops: %s", bt_errmsg(&e, rc));
        return 1;
    }
    struct worker_caps caps;
    if ((rc = caps_measure(&caps, NULL, &e))) {
        BT_LOG(ERROR, "worker", "caps: %s", bt_errmsg(&e, rc));
        return 1;
    }
    BT_LOG(INFO, "worker", "caps ram=%llu cores=%d isa=%s mem_bw_gbps=%.1f matmul_gflops=%.1f",
           (unsigned long long)caps.ram_bytes, caps.cores, caps.isa, (double)caps.mem_bw_gbps,
           (double)caps.matmul_gflops);
    char bind[300], id[300];
    if (a.bind)
        snprintf(bind, sizeof bind, "%s", a.bind);
    else
        default_bind(a.join, bind, sizeof bind);
    if (a.id)
        snprintf(id, sizeof id, "%s", a.id);
    else
        snprintf(id, sizeof id, "%s-%d", caps.hostname, (int)getpid());
    struct worker_opts o = {.kind = TRANSPORT_ZMQ,
                            .join = a.join,
                            .bind = bind,
                            .id = id,
                            .model_path = a.model,
                            .cache_dir = a.cache_dir,
                            .mem_budget = a.mem,
                            .threads = a.threads,
                            .max_rows = a.max_rows,
                            .caps = &caps};
    if ((rc = worker_open(&g_worker, &o, &e))) {
        BT_LOG(ERROR, "worker", "%s", bt_errmsg(&e, rc));
        return 1;
    }
    bt_signals_install(on_signal);
    rc = worker_run(g_worker, &e);
    if (rc) BT_LOG(ERROR, "worker", "%s", bt_errmsg(&e, rc));
    worker_t *w = g_worker;
    g_worker = NULL;
    worker_close(w);
    return rc ? 1 : 0;
}
