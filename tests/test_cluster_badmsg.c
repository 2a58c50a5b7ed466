/* tests/test_cluster_badmsg.c: a real cluster (the baton-coordinator and baton-worker binaries
 * of this build, on 127.0.0.1) is sent malformed and wrong-version messages by a test client:
 * on the coordinator's control endpoint and on the worker's data endpoint. Every one must be
 * answered with an Error carrying the right code word, and afterwards the cluster must still
 * serve: a greedy completion through the HTTP API equals the tiny-a reference. */
#include "proto/msg.h"
#include "proto/transport.h"
#include "tests/fixtures.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static char g_dir[PATH_MAX], g_bin[PATH_MAX];
static pid_t g_pids[4];
static int g_npids;

static pid_t spawn(const char *const argv[], const char *log) {
    pid_t p = fork();
    cr_assert_geq(p, 0);
    if (p == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) _exit(127);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    g_pids[g_npids++] = p;
    return p;
}

static void stop_all(void) {
    for (int i = g_npids - 1; i >= 0; i--) {
        kill(g_pids[i], SIGTERM);
        int st;
        for (int k = 0; k < 100 && waitpid(g_pids[i], &st, WNOHANG) == 0; k++)
            usleep(50000);
        kill(g_pids[i], SIGKILL);
        waitpid(g_pids[i], &st, 0);
    }
    g_npids = 0;
}

/* Waits until log contains needle; copies the word after it into out. */
static int wait_log(const char *log, const char *needle, int secs, char *out, size_t cap) {
    static char buf[1 << 20];
    for (int i = 0; i < secs * 20; i++) {
        FILE *f = fopen(log, "r");
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f) fclose(f);
        buf[n] = 0;
        const char *p = strstr(buf, needle);
        if (p) {
            p += strlen(needle);
            size_t k = strcspn(p, " \n");
            if (k >= cap) k = cap - 1;
            memcpy(out, p, k);
            out[k] = 0;
            return 0;
        }
        usleep(50000);
    }
    return -1;
}

static void send_frames(transport_t *t, const struct tx_frame *f, int n) {
    bt_err e = {0};
    cr_assert_eq(transport_send(t, NULL, f, n, &e), 0, "%s", e.msg);
}

static void send_env(transport_t *t, const Baton__Envelope *env, int extra_frames) {
    uint8_t *buf = NULL;
    size_t len = 0;
    bt_err e = {0};
    cr_assert_eq(msg_pack(env, &buf, &len, &e), 0, "%s", e.msg);
    struct tx_frame f[TX_MAX_FRAMES] = {{.data = buf, .len = len}};
    static const char junk[8] = "payload";
    for (int i = 0; i < extra_frames; i++)
        f[1 + i] = (struct tx_frame){.data = junk, .len = sizeof junk};
    send_frames(t, f, 1 + extra_frames);
    free(buf);
}

/* The next reply must be an Error with this code word (and this request id, if nonzero). */
static void expect_error(transport_t *t, const char *code, uint64_t rid, const char *what) {
    bt_err e = {0};
    struct tx_msg m;
    int rc;
    rc = transport_recv(t, 5000, &m, &e);
    cr_assert_eq(rc, 0, "%s: no reply (%s)", what, bt_errmsg(&e, rc));
    Baton__Envelope *env = NULL;
    cr_assert_eq(msg_unpack(m.data[0], m.len[0], NULL, &env, NULL, &e), 0, "%s: %s", what, e.msg);
    cr_assert_eq(env->body_case, BATON__ENVELOPE__BODY_ERROR, "%s: reply is %s", what,
                 msg_body_name(env->body_case));
    cr_assert_str_eq(env->error->code, code, "%s: code %s (%s), want %s", what, env->error->code,
                     env->error->message, code);
    if (rid) cr_assert_eq(env->request_id, rid, "%s: request id", what);
    msg_free(env, NULL);
}

static void hello(Baton__Envelope *env, Baton__Hello *h, uint32_t ver, const char *id) {
    msg_init(env, 42);
    baton__hello__init(h);
    h->worker_id = (char *)(uintptr_t)id;
    h->protocol_version = ver;
    h->mem_budget_bytes = 1u << 30;
    h->mem_bw_gbps = 10.0f;
    h->cores = 2;
    h->data_endpoint = (char *)(uintptr_t) "tcp://127.0.0.1:1";
    env->body_case = BATON__ENVELOPE__BODY_HELLO;
    env->hello = h;
}

/* The standard garbage: not protobuf, a foreign version, and (on the coordinator) more. */
static void common_cases(transport_t *t, const char *who) {
    char what[128];
    static const unsigned char garbage[] = {0x12, 0x34, 'g', 'a', 'r', 'b', 0xff, 0xff, 0xff};
    struct tx_frame f = {.data = garbage, .len = sizeof garbage};
    send_frames(t, &f, 1);
    snprintf(what, sizeof what, "%s: garbage", who);
    expect_error(t, "malformed", 0, what);

    Baton__Envelope env;
    Baton__Heartbeat hb;
    msg_init(&env, 7);
    env.version = 7;
    baton__heartbeat__init(&hb);
    env.body_case = BATON__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    send_env(t, &env, 0);
    snprintf(what, sizeof what, "%s: envelope v7", who);
    expect_error(t, "version", 7, what);

    static const unsigned char nobody[] = {0x08, 0x01, 0x10, 0x09}; /* version 1, id 9 */
    f = (struct tx_frame){.data = nobody, .len = sizeof nobody};
    send_frames(t, &f, 1);
    snprintf(what, sizeof what, "%s: no body", who);
    expect_error(t, "protocol", 9, what);

    msg_init(&env, 11);
    env.body_case = BATON__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    send_env(t, &env, 2); /* a Heartbeat has no payload frames */
    snprintf(what, sizeof what, "%s: unexpected payload", who);
    expect_error(t, "protocol", 11, what);
}

/* More frames than a message may have: our transport refuses to send that, so a raw DEALER
 * does. The reply (skipping the transport's 0x00 pings) must be Error "protocol". */
static void too_many_frames(const char *ep) {
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, tmo = 5000;
    zmq_setsockopt(s, ZMQ_ROUTING_ID, "raw-prober", 10);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    cr_assert_eq(zmq_connect(s, ep), 0);
    Baton__Envelope env;
    Baton__Heartbeat hb;
    msg_init(&env, 12);
    baton__heartbeat__init(&hb);
    env.body_case = BATON__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    uint8_t *buf = NULL;
    size_t len = 0;
    cr_assert_eq(msg_pack(&env, &buf, &len, NULL), 0);
    zmq_send(s, buf, len, ZMQ_SNDMORE);
    for (int i = 0; i < TX_MAX_FRAMES; i++)
        zmq_send(s, "x", 1, i + 1 < TX_MAX_FRAMES ? ZMQ_SNDMORE : 0);
    free(buf);
    int got = 0;
    for (int tries = 0; tries < 20 && !got; tries++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        int r = zmq_msg_recv(&m, s, 0);
        cr_assert_geq(r, 0, "too many frames: no reply");
        int more = zmq_msg_more(&m);
        const unsigned char *d = zmq_msg_data(&m);
        if (r > 0 && d[0] != 0x00) {
            Baton__Envelope *rep = NULL;
            cr_assert_eq(msg_unpack(d, (size_t)r, NULL, &rep, NULL, NULL), 0);
            cr_assert_eq(rep->body_case, BATON__ENVELOPE__BODY_ERROR);
            cr_assert_str_eq(rep->error->code, "protocol", "%s", rep->error->message);
            msg_free(rep, NULL);
            got = 1;
        }
        zmq_msg_close(&m);
        while (more) { /* drain the rest of a multipart */
            zmq_msg_init(&m);
            zmq_msg_recv(&m, s, 0);
            more = zmq_msg_more(&m);
            zmq_msg_close(&m);
        }
    }
    cr_assert(got, "too many frames: no Error reply");
    zmq_close(s);
    zmq_ctx_term(ctx);
}

/* POST /v1/completions with the chat prompt; returns the first n token ids in out. */
static void complete(int port, int n, int *out) {
    int32_t ids[512];
    int n_ids = 0;
    FILE *f = fopen(fixture_path("tiny-a/prompts/chat.ids"), "r");
    cr_assert(f);
    while (n_ids < 512 && fscanf(f, "%d", &ids[n_ids]) == 1)
        n_ids++;
    fclose(f);
    cJSON *rq = cJSON_CreateObject();
    cJSON *pr = cJSON_AddArrayToObject(rq, "prompt");
    for (int i = 0; i < n_ids; i++)
        cJSON_AddItemToArray(pr, cJSON_CreateNumber(ids[i]));
    cJSON_AddStringToObject(rq, "model", "tiny-a");
    cJSON_AddNumberToObject(rq, "max_tokens", n);
    cJSON_AddNumberToObject(rq, "temperature", 0);
    cJSON_AddBoolToObject(rq, "return_token_ids", 1);
    char *body = cJSON_PrintUnformatted(rq);
    cJSON_Delete(rq);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      strlen(body));
    cr_assert_eq(write(fd, head, (size_t)hn), hn);
    cr_assert_eq(write(fd, body, strlen(body)), (ssize_t)strlen(body));
    cJSON_free(body);
    static char resp[1 << 16];
    size_t len = 0;
    ssize_t r;
    while ((r = read(fd, resp + len, sizeof resp - 1 - len)) > 0)
        len += (size_t)r;
    close(fd);
    resp[len] = 0;
    char *js = strstr(resp, "\r\n\r\n");
    cr_assert(js && strstr(resp, " 200 "), "completion failed: %s", resp);
    cJSON *root = cJSON_Parse(js + 4);
    const cJSON *tids = cJSON_GetObjectItem(
        cJSON_GetArrayItem(cJSON_GetObjectItem(root, "choices"), 0), "token_ids");
    cr_assert_eq(cJSON_GetArraySize(tids), n, "%s", js + 4);
    for (int i = 0; i < n; i++)
        out[i] = cJSON_GetArrayItem(tids, i)->valueint;
    cJSON_Delete(root);
}

static void check_serving(int port) {
    int got[8], want[8];
    complete(port, 8, got);
    FILE *f = fopen(fixture_path("tiny-a/ref/f32/chat/greedy.txt"), "r");
    cr_assert(f);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(fscanf(f, "%d", &want[i]), 1);
    fclose(f);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(got[i], want[i], "token %d: %d vs reference %d", i, got[i], want[i]);
}

Test(cluster_badmsg, errors_and_keeps_serving, .timeout = 90, .fini = stop_all) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    cr_assert_gt(n, 0);
    exe[n] = 0;
    snprintf(g_bin, sizeof g_bin, "%s", dirname(dirname(exe))); /* BUILD/tests/x -> BUILD */
    char coord[PATH_MAX + 32], worker[PATH_MAX + 32];
    snprintf(coord, sizeof coord, "%s/baton-coordinator", g_bin);
    snprintf(worker, sizeof worker, "%s/baton-worker", g_bin);
    if (access(coord, X_OK) || access(worker, X_OK)) cr_skip_test("daemons not built in %s", g_bin);
    snprintf(g_dir, sizeof g_dir, "/tmp/baton-badmsg.XXXXXX");
    cr_assert(mkdtemp(g_dir));
    char clog[PATH_MAX + 16], wlog[PATH_MAX + 16];
    snprintf(clog, sizeof clog, "%s/coord.log", g_dir);
    snprintf(wlog, sizeof wlog, "%s/worker.log", g_dir);
    const char *model = fixture_path("tiny-a/gguf/model-f32.gguf");
    const char *cargv[] = {coord,
                           "--model",
                           model,
                           "--bind",
                           "tcp://127.0.0.1:*",
                           "--min-workers",
                           "1",
                           "--http",
                           "127.0.0.1:0",
                           "--wire",
                           "f32",
                           "--max-ctx",
                           "256",
                           "--max-seqs",
                           "2",
                           NULL};
    spawn(cargv, clog);
    char ctrl[256], port_s[32], data[256];
    cr_assert_eq(wait_log(clog, "control=", 20, ctrl, sizeof ctrl), 0, "no control endpoint");
    const char *wargv[] = {worker, "--join",    ctrl, "--model", model, "--mem",
                           "1G",   "--threads", "1",  "--id",    "w1",  NULL};
    spawn(wargv, wlog);
    cr_assert_eq(wait_log(clog, "ready http_port=", 40, port_s, sizeof port_s), 0, "not ready");
    cr_assert_eq(wait_log(clog, "data=", 1, data, sizeof data), 0);
    int port = atoi(port_s);
    check_serving(port);

    /* The coordinator's control endpoint. */
    bt_err e = {0};
    transport_t *t = NULL;
    struct transport_opts to = {
        .kind = TRANSPORT_ZMQ, .role = TRANSPORT_CLIENT, .endpoint = ctrl, .identity = "prober"};
    cr_assert_eq(transport_open(&t, &to, &e), 0, "%s", e.msg);
    common_cases(t, "coordinator");
    Baton__Envelope env;
    Baton__Hello h;
    hello(&env, &h, 2, "prober");
    send_env(t, &env, 0);
    expect_error(t, "version", 42, "coordinator: Hello v2");
    hello(&env, &h, MSG_PROTOCOL_VERSION, "someone-else");
    send_env(t, &env, 0);
    expect_error(t, "protocol", 42, "coordinator: Hello with another id");
    hello(&env, &h, MSG_PROTOCOL_VERSION, "prober");
    h.data_endpoint = (char *)(uintptr_t) "tcp://0.0.0.0:1";
    send_env(t, &env, 0);
    expect_error(t, "protocol", 42, "coordinator: Hello with a wildcard endpoint");
    Baton__Cancel cn;
    baton__cancel__init(&cn);
    uint64_t sid = 1;
    cn.n_seq_id = 1;
    cn.seq_id = &sid;
    msg_init(&env, 5);
    env.body_case = BATON__ENVELOPE__BODY_CANCEL;
    env.cancel = &cn;
    send_env(t, &env, 0);
    expect_error(t, "protocol", 5, "coordinator: a body it does not accept");
    Baton__ModelChunkRequest cr;
    baton__model_chunk_request__init(&cr);
    cr.length = 10;
    msg_init(&env, 6);
    env.body_case = BATON__ENVELOPE__BODY_MODEL_CHUNK_REQUEST;
    env.model_chunk_request = &cr;
    send_env(t, &env, 0);
    expect_error(t, "protocol", 6, "coordinator: chunk request before Hello");
    transport_close(t);
    too_many_frames(ctrl);
    check_serving(port);

    /* The worker's data endpoint. */
    to.endpoint = data;
    to.identity = "prober-data";
    cr_assert_eq(transport_open(&t, &to, &e), 0, "%s", e.msg);
    common_cases(t, "worker");
    transport_close(t);
    check_serving(port);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    cr_assert_eq(system(cmd), 0);
}
