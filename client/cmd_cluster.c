/* client/cmd_cluster.c: `baton generate --cluster http://HOST:PORT --tokens IDS -n N [--greedy]`
 * drives a running coordinator through its HTTP API (POST /v1/completions with the prompt as
 * token ids and return_token_ids), so the CLI exercises the real server: scheduler, pipeline
 * executor and workers. Prints the generated ids on one line like `baton generate`; with
 * --logprobs K, then one line per token: "id logprob" followed by K "id:logprob" alternatives,
 * numbers exactly as the server's JSON gave them (bit-exact comparisons between servers).
 * The model id is asked from GET /v1/models unless --model-name gives it. */
#include "client/cli_util.h"
#include "client/commands.h"

#include <argp.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

struct cl_args {
    const char *url, *tokens, *model_name;
    int n_gen, greedy, logprobs, timeout_s;
    float temp;
    unsigned long long seed;
    bt_err e;
};

static const struct argp_option cl_opts[] = {
    {"cluster", 'C', "URL", 0, "coordinator HTTP address, e.g. http://127.0.0.1:8080", 0},
    {"tokens", 't', "IDS", 0, "text file of prompt token ids", 0},
    {"n", 'n', "N", 0, "tokens to generate (default 32)", 0},
    {"greedy", 'g', 0, 0, "argmax decoding (default)", 0},
    {"temp", 'T', "T", 0, "sample with temperature T", 0},
    {"seed", 's', "S", 0, "sampling seed", 0},
    {"logprobs", 'p', "K", 0, "also print each token's logprob and K alternatives (0..5)", 0},
    {"model-name", 'M', "NAME", 0, "model id to request (default: ask /v1/models)", 0},
    {"timeout", 'w', "SECS", 0, "give up after SECS (default 300)", 0},
    {0}};

static error_t cl_parse(int key, char *arg, struct argp_state *st) {
    struct cl_args *a = st->input;
    switch (key) {
    case 'C':
        a->url = arg;
        break;
    case 't':
        a->tokens = arg;
        break;
    case 'M':
        a->model_name = arg;
        break;
    case 'g':
        a->greedy = 1;
        break;
    case 'T':
        a->temp = strtof(arg, NULL);
        break;
    case 's':
        a->seed = strtoull(arg, NULL, 10);
        break;
    case 'n':
        if (cli_parse_int("-n", arg, 1, 1 << 20, &a->n_gen, &a->e)) argp_error(st, "%s", a->e.msg);
        break;
    case 'p':
        if (cli_parse_int("--logprobs", arg, 0, 5, &a->logprobs, &a->e))
            argp_error(st, "%s", a->e.msg);
        break;
    case 'w':
        if (cli_parse_int("--timeout", arg, 1, 86400, &a->timeout_s, &a->e))
            argp_error(st, "%s", a->e.msg);
        break;
    case 'm':
        break; /* --model: accepted (and ignored) so scripts can pass the same flags */
    case ARGP_KEY_END:
        if (!a->url || !a->tokens) argp_error(st, "--cluster and --tokens are required");
        break;
    default:
        return ARGP_ERR_UNKNOWN;
    }
    return 0;
}

/* http://host:port[/...] -> host, port. */
static int parse_url(const char *url, char *host, size_t hcap, char *port, size_t pcap, bt_err *e) {
    const char *p = url;
    if (!strncmp(p, "http://", 7))
        p += 7;
    else if (strstr(p, "://"))
        return bt_fail(e, BT_EINVAL, "--cluster %s: only http:// URLs", url);
    const char *end = p + strcspn(p, "/");
    const char *colon = memchr(p, ':', (size_t)(end - p));
    if (p[0] == '[') { /* [v6]:port */
        const char *rb = memchr(p, ']', (size_t)(end - p));
        colon = rb && rb[1] == ':' ? rb + 1 : NULL;
        p++;
        if (!rb || (size_t)(rb - p) >= hcap)
            return bt_fail(e, BT_EINVAL, "--cluster %s: bad host", url);
        memcpy(host, p, (size_t)(rb - p));
        host[rb - p] = 0;
    } else {
        const char *he = colon ? colon : end;
        if (he == p || (size_t)(he - p) >= hcap)
            return bt_fail(e, BT_EINVAL, "--cluster %s: bad host", url);
        memcpy(host, p, (size_t)(he - p));
        host[he - p] = 0;
    }
    if (!colon || (size_t)(end - colon - 1) >= pcap || end == colon + 1)
        return bt_fail(e, BT_EINVAL, "--cluster %s: needs a port", url);
    memcpy(port, colon + 1, (size_t)(end - colon - 1));
    port[end - colon - 1] = 0;
    return 0;
}

/* One request; *body = malloc'd response body (NUL-terminated), *status = HTTP status. */
static int http_call(const char *host, const char *port, const char *method, const char *path,
                     const char *json, int timeout_s, int *status, char **body, bt_err *e) {
    *body = NULL;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc) return bt_fail(e, BT_EINVAL, "%s:%s: %s", host, port, gai_strerror(rc));
    int fd = -1;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        if (!connect(fd, a->ai_addr, a->ai_addrlen)) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0) return bt_fail(e, -ECONNREFUSED, "cannot connect to %s:%s", host, port);
    struct timeval tv = {.tv_sec = timeout_s};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t blen = json ? strlen(json) : 0;
    char head[512];
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      method, path, host, port, blen);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    rc = 0;
    if (hn < 0 || (size_t)hn >= sizeof head || write(fd, head, (size_t)hn) != hn ||
        (blen && write(fd, json, blen) != (ssize_t)blen)) {
        rc = bt_fail(e, -EIO, "%s:%s: sending the request failed", host, port);
        goto out;
    }
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap);
            if (!nb) {
                rc = bt_fail(e, -ENOMEM, "response buffer");
                goto out;
            }
            buf = nb;
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = bt_fail(e, errno == EAGAIN ? BT_ETIMEDOUT : -errno,
                         "%s:%s: no complete response within %d s", host, port, timeout_s);
            goto out;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    buf[len] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (!buf || sscanf(buf, "HTTP/1.%*d %d", status) != 1 || !sep) {
        rc = bt_fail(e, BT_EFORMAT, "%s:%s: not an HTTP response", host, port);
        goto out;
    }
    *sep = 0;
    const char *payload = sep + 4;
    size_t plen = len - (size_t)(payload - buf);
    char *out = malloc(plen + 1);
    if (!out) {
        rc = bt_fail(e, -ENOMEM, "response body");
        goto out;
    }
    if (strcasestr(buf, "transfer-encoding: chunked")) { /* de-chunk in place */
        size_t o = 0;
        const char *q = payload;
        for (;;) {
            char *ce;
            unsigned long n = strtoul(q, &ce, 16);
            const char *d = strstr(ce, "\r\n");
            if (!d || n == 0 || (size_t)(d + 2 - payload) + n > plen) break;
            memcpy(out + o, d + 2, n);
            o += n;
            q = d + 2 + n + 2;
        }
        out[o] = 0;
    } else {
        memcpy(out, payload, plen);
        out[plen] = 0;
    }
    *body = out;
out:
    free(buf);
    close(fd);
    return rc;
}

int cmd_generate_cluster(int argc, char **argv) {
    struct cl_args a = {.n_gen = 32, .timeout_s = 300};
    struct argp argp = {
        cl_opts, cl_parse, NULL, "Generates N token ids after a prompt on a running coordinator.",
        0,       0,        0};
    if (argp_parse(&argp, argc, argv, 0, NULL, &a)) return 2;
    char host[256], port[16];
    int32_t *ids = NULL;
    int n = 0, status = 0, rc;
    char *body = NULL, *req = NULL;
    cJSON *root = NULL, *rq = NULL;
    char model[256] = "";
    bt_err e = {0};
    if ((rc = parse_url(a.url, host, sizeof host, port, sizeof port, &e)) ||
        (rc = cli_read_ids(a.tokens, &ids, &n, &e)))
        goto fail;
    if (a.model_name) {
        snprintf(model, sizeof model, "%s", a.model_name);
    } else {
        if ((rc =
                 http_call(host, port, "GET", "/v1/models", NULL, a.timeout_s, &status, &body, &e)))
            goto fail;
        root = cJSON_Parse(body);
        const cJSON *d = root ? cJSON_GetObjectItem(root, "data") : NULL;
        const cJSON *id = d ? cJSON_GetObjectItem(cJSON_GetArrayItem(d, 0), "id") : NULL;
        if (status != 200 || !cJSON_IsString(id)) {
            rc = bt_fail(&e, BT_EFORMAT, "GET /v1/models: status %d: %.200s", status, body);
            goto fail;
        }
        snprintf(model, sizeof model, "%s", id->valuestring);
        cJSON_Delete(root);
        root = NULL;
        free(body);
        body = NULL;
    }
    rq = cJSON_CreateObject();
    cJSON *prompt = cJSON_AddArrayToObject(rq, "prompt");
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(prompt, cJSON_CreateNumber(ids[i]));
    cJSON_AddStringToObject(rq, "model", model);
    cJSON_AddNumberToObject(rq, "max_tokens", a.n_gen);
    cJSON_AddNumberToObject(rq, "temperature", a.greedy || a.temp <= 0.0f ? 0.0 : (double)a.temp);
    cJSON_AddNumberToObject(rq, "seed", (double)a.seed);
    cJSON_AddBoolToObject(rq, "return_token_ids", 1);
    if (a.logprobs > 0) cJSON_AddNumberToObject(rq, "logprobs", a.logprobs);
    if (!(req = cJSON_PrintUnformatted(rq))) {
        rc = bt_fail(&e, -ENOMEM, "request JSON");
        goto fail;
    }
    if ((rc = http_call(host, port, "POST", "/v1/completions", req, a.timeout_s, &status, &body,
                        &e)))
        goto fail;
    root = cJSON_Parse(body);
    const cJSON *ch = root ? cJSON_GetArrayItem(cJSON_GetObjectItem(root, "choices"), 0) : NULL;
    const cJSON *tids = ch ? cJSON_GetObjectItem(ch, "token_ids") : NULL;
    if (status != 200 || !cJSON_IsArray(tids)) {
        rc = bt_fail(&e, BT_EFORMAT, "POST /v1/completions: status %d: %.200s", status, body);
        goto fail;
    }
    int k = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tids) printf(k++ ? " %d" : "%d", t->valueint);
    printf("\n");
    if (a.logprobs > 0) {
        const cJSON *lp = cJSON_GetObjectItem(ch, "logprobs");
        const cJSON *tl = lp ? cJSON_GetObjectItem(lp, "token_logprobs") : NULL;
        const cJSON *top = lp ? cJSON_GetObjectItem(lp, "top_logprobs") : NULL;
        int i = 0;
        cJSON_ArrayForEach(t, tids) {
            char *v = cJSON_PrintUnformatted(cJSON_GetArrayItem(tl, i));
            char *alt = cJSON_PrintUnformatted(cJSON_GetArrayItem(top, i));
            printf("%d %s %s\n", t->valueint, v ? v : "?", alt ? alt : "?");
            cJSON_free(v);
            cJSON_free(alt);
            i++;
        }
    }
    rc = 0;
fail:
    if (rc) fprintf(stderr, "baton generate --cluster: %s\n", bt_errmsg(&e, rc));
    cJSON_Delete(root);
    cJSON_Delete(rq);
    cJSON_free(req);
    free(body);
    free(ids);
    return rc ? 1 : 0;
}
