/* client/cmd_admin.c: `baton admin workers|drain ID|replan --url URL`: the coordinator's
 * operator endpoints (coordinator/admin.h) from the command line, for people and for the
 * rolling-restart play. `workers` prints one line per worker (--json: the server's JSON).
 * `drain ID --wait` returns once the worker is drained and the coordinator serves again (or
 * waits for workers, when the ones left cannot hold the model): the worker may then stop.
 * `replan --wait` returns once the new plan serves. Exit status 0 on success, 1 on an error
 * answer or a timeout, 2 on bad usage. */
#include "client/cli_flags.h"
#include "client/commands.h"
#include "client/http_client.h"
#include "common/clock.h"

#include <argp.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct admin_args {
    const char *verb, *worker;
    int wait, json;
    struct cli_flags f;
};

enum { OPT_WAIT = 1000, OPT_JSON };

static const struct argp_option admin_opts[] = {
    {"url", CLI_KEY_URL, "URL", 0, "coordinator, e.g. http://127.0.0.1:8080 (required)", 0},
    {"wait", OPT_WAIT, 0, 0,
     "drain, replan: return once the coordinator serves with the new plan (or, after a drain, "
     "waits for workers because the rest cannot hold the model)",
     0},
    {"json", OPT_JSON, 0, 0, "workers: print the server's JSON", 0},
    {"timeout", CLI_KEY_TIMEOUT, "SECS", 0, "give up after this long (default 600)", 0},
    {0}};

static error_t admin_parse(int key, char *arg, struct argp_state *st) {
    struct admin_args *a = st->input;
    switch (key) {
    case OPT_WAIT:
        a->wait = 1;
        return 0;
    case OPT_JSON:
        a->json = 1;
        return 0;
    case ARGP_KEY_ARG:
        if (!a->verb)
            a->verb = arg;
        else if (!a->worker && !strcmp(a->verb, "drain"))
            a->worker = arg;
        else
            argp_error(st, "unexpected argument %s", arg);
        return 0;
    case ARGP_KEY_END:
        if (!a->f.v.url) argp_error(st, "--url is required");
        if (!a->verb) argp_error(st, "say workers, drain ID or replan");
        if (strcmp(a->verb, "workers") && strcmp(a->verb, "drain") && strcmp(a->verb, "replan"))
            argp_error(st, "unknown action %s (workers, drain ID, replan)", a->verb);
        if (!strcmp(a->verb, "drain") && !a->worker) argp_error(st, "drain: which worker?");
        return 0;
    default:
        return cli_flags_parse(&a->f, key, arg, st);
    }
}

/* One request; the answer's JSON (caller deletes) in *out, or NULL with a message printed. */
static int call(const struct http_url *u, const char *method, const char *route, int timeout_s,
                int *status, cJSON **out) {
    char path[2048];
    bt_err e = {0};
    *out = NULL;
    int rc = http_url_endpoint(u, route, path, sizeof path, &e);
    char *body = NULL;
    size_t len = 0;
    struct http_call_opts o = {.method = method,
                               .path = path,
                               .body = !strcmp(method, "POST") ? "" : NULL,
                               .timeout_ms = timeout_s * 1000};
    if (!rc) rc = http_fetch(u, &o, status, &body, &len, &e);
    if (rc) {
        fprintf(stderr, "baton admin: %s %s: %s\n", method, route, bt_errmsg(&e, rc));
        return 1;
    }
    *out = cJSON_ParseWithLength(body, len);
    if (!*out)
        fprintf(stderr, "baton admin: %s %s: HTTP %d, not JSON: %.200s\n", method, route, *status,
                body);
    free(body);
    return *out ? 0 : 1;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static void print_workers(const cJSON *j) {
    const cJSON *stages = cJSON_GetObjectItemCaseSensitive(j, "stages");
    printf("status: %s, %d stage(s)\n", jstr(j, "status"),
           cJSON_IsNumber(stages) ? stages->valueint : 0);
    printf("%-24s %-20s %-9s %5s %-9s %s\n", "ID", "HOST", "STATE", "STAGE", "LAYERS", "MEM");
    const cJSON *w;
    cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(j, "workers")) {
        const cJSON *stage = cJSON_GetObjectItemCaseSensitive(w, "stage");
        const cJSON *layers = cJSON_GetObjectItemCaseSensitive(w, "layers");
        const cJSON *mem = cJSON_GetObjectItemCaseSensitive(w, "mem_budget_bytes");
        char st[16] = "-", ly[32] = "-";
        if (cJSON_IsNumber(stage)) snprintf(st, sizeof st, "%d", stage->valueint);
        if (cJSON_GetArraySize(layers) == 2)
            snprintf(ly, sizeof ly, "%d..%d", cJSON_GetArrayItem(layers, 0)->valueint,
                     cJSON_GetArrayItem(layers, 1)->valueint - 1);
        printf("%-24s %-20s %-9s %5s %-9s %.2f GiB\n", jstr(w, "id"), jstr(w, "host"),
               jstr(w, "state"), st, ly,
               cJSON_IsNumber(mem) ? mem->valuedouble / (1024.0 * 1024.0 * 1024.0) : 0.0);
    }
}

/* Polls /admin/workers until the coordinator serves (or, for a drain, until the worker is
 * drained and the coordinator is not in the middle of loading a plan). */
static int wait_done(const struct http_url *u, const char *worker, int timeout_s) {
    int64_t until = bt_now_ns() + (int64_t)timeout_s * 1000000000;
    const char *last = "";
    char seen[64] = "";
    while (bt_now_ns() < until) {
        int status = 0;
        cJSON *j = NULL;
        if (call(u, "GET", "/admin/workers", 30, &status, &j) == 0 && status == 200) {
            const char *s = jstr(j, "status");
            int ok = !strcmp(s, "serving");
            if (worker) {
                const cJSON *w;
                const char *wst = "";
                cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(j, "workers")) {
                    if (!strcmp(jstr(w, "id"), worker)) wst = jstr(w, "state");
                }
                ok = !strcmp(wst, "drained") &&
                     (!strcmp(s, "serving") || !strcmp(s, "waiting for workers"));
            }
            snprintf(seen, sizeof seen, "%s", s);
            last = seen;
            cJSON_Delete(j);
            if (ok) {
                printf("coordinator: %s\n", seen);
                return 0;
            }
        } else {
            cJSON_Delete(j);
        }
        usleep(500 * 1000);
    }
    fprintf(stderr, "baton admin: still %s after %d s\n", last[0] ? last : "no answer", timeout_s);
    return 1;
}

int cmd_admin(int argc, char **argv) {
    struct admin_args a = {.f = {.v = {.timeout_s = 600}}};
    struct argp ap = {admin_opts,
                      admin_parse,
                      "workers | drain WORKER_ID | replan",
                      "Operator commands of a baton coordinator (only from its own host unless "
                      "it runs with --admin-remote).",
                      NULL,
                      NULL,
                      NULL};
    if (argp_parse(&ap, argc, argv, ARGP_IN_ORDER, NULL, &a)) return 2;
    struct http_url u;
    bt_err e = {0};
    if (http_url_parse(a.f.v.url, &u, &e)) {
        fprintf(stderr, "baton admin: %s\n", e.msg);
        return 2;
    }
    int status = 0;
    cJSON *j = NULL;
    if (!strcmp(a.verb, "workers")) {
        if (call(&u, "GET", "/admin/workers", a.f.v.timeout_s, &status, &j)) return 1;
        if (status != 200)
            fprintf(stderr, "baton admin: HTTP %d: %s\n", status, jstr(j, "error"));
        else if (a.json) {
            char *s = cJSON_Print(j);
            if (s) puts(s);
            free(s);
        } else
            print_workers(j);
        cJSON_Delete(j);
        return status == 200 ? 0 : 1;
    }
    char route[512];
    if (!strcmp(a.verb, "drain"))
        snprintf(route, sizeof route, "/admin/workers/%s/drain", a.worker);
    else
        snprintf(route, sizeof route, "/admin/replan");
    if (call(&u, "POST", route, a.f.v.timeout_s, &status, &j)) return 1;
    int ok = status == 200 || status == 202;
    const char *text = ok ? jstr(j, "result") : jstr(j, "error");
    fprintf(ok ? stdout : stderr, "%s%s: %s\n", ok ? "" : "baton admin: ", a.verb, text);
    fflush(stdout);
    cJSON_Delete(j);
    if (!ok) return 1;
    if (!a.wait) return 0;
    if (!a.worker && status == 200) return 0; /* replan: the current plan stays */
    return wait_done(&u, a.worker, a.f.v.timeout_s);
}
