/* tests/test_planner.c: coordinator/planner on synthetic models (fits, refuses, balances,
 * leaves out a slow worker, first/last charges tied and untied, 1..5 and 20 workers) and on
 * the tiny-a fixture (its stage bytes equal model_range's). */
#include "coordinator/planner.h"
#include "engine/model.h"
#include "tests/fixtures.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MiB (1024ull * 1024ull)
#define GiB (1024ull * MiB)

/* 32 layers of 100 MiB weights + 10 MiB state; embedding 50 MiB, head 60 MiB. */
static void synth(struct plan_model *pm, int tied) {
    memset(pm, 0, sizeof *pm);
    pm->n_layer = 32;
    for (int l = 0; l < 32; l++) {
        pm->layer[l].weight_bytes = 100 * MiB;
        pm->layer[l].state_bytes = 10 * MiB;
        pm->layer[l].flops = 2.0 * 50e6;
    }
    pm->first_bytes = 50 * MiB;
    pm->last_bytes = tied ? 50 * MiB + 1024 : 60 * MiB;
    pm->shared_bytes = tied ? 50 * MiB : 0;
    pm->last_flops = 2.0 * 25e6;
    pm->stage_overhead_bytes = 8 * MiB;
}

static void worker(struct plan_worker *w, const char *id, uint64_t mem, double bw) {
    memset(w, 0, sizeof *w);
    snprintf(w->id, sizeof w->id, "%s", id);
    w->mem_bytes = mem;
    w->mem_bw_gbps = bw;
    w->gflops = 0;
}

/* Every plan must cover [0, n_layer) in order, each stage non-empty and within its budget,
 * each worker at most once, with the first/last charges on the ends. */
static void check_valid(const struct plan *p, const struct plan_model *pm,
                        const struct plan_worker *w, int n) {
    cr_assert_gt(p->n_stages, 0);
    cr_assert_leq(p->n_stages, n);
    int used[PLAN_MAX_WORKERS] = {0};
    int at = 0;
    double worst = 0, sum = 0;
    for (int s = 0; s < p->n_stages; s++) {
        const struct plan_stage *st = &p->stage[s];
        cr_assert_eq(st->lo, at, "stage %d starts at %d, expected %d", s, st->lo, at);
        cr_assert_gt(st->hi, st->lo);
        cr_assert(st->worker >= 0 && st->worker < n);
        cr_assert_eq(used[st->worker], 0, "worker %d used twice", st->worker);
        used[st->worker] = 1;
        cr_assert_leq(st->total_bytes, w[st->worker].mem_bytes, "stage %d over budget", s);
        uint64_t wb = 0, sb = 0;
        for (int l = st->lo; l < st->hi; l++) {
            wb += pm->layer[l].weight_bytes;
            sb += pm->layer[l].state_bytes;
        }
        if (s == 0) wb += pm->first_bytes;
        if (s == p->n_stages - 1) wb += pm->last_bytes;
        if (p->n_stages == 1) wb -= pm->shared_bytes;
        cr_assert_eq(st->weight_bytes, wb, "stage %d weights %llu != %llu", s,
                     (unsigned long long)st->weight_bytes, (unsigned long long)wb);
        cr_assert_eq(st->state_bytes, sb);
        cr_assert_eq(st->total_bytes, wb + sb + pm->stage_overhead_bytes);
        if (st->ms_per_token > worst) worst = st->ms_per_token;
        sum += st->ms_per_token;
        at = st->hi;
    }
    cr_assert_eq(at, pm->n_layer);
    cr_assert_float_eq(p->bottleneck_ms, worst, 1e-9);
    cr_assert_float_eq(p->latency_ms, sum, 1e-6);
    cr_assert_eq(p->n_left_out, n - p->n_stages);
}

Test(planner, one_worker_fits) {
    struct plan_model pm;
    synth(&pm, 0);
    struct plan_worker w;
    worker(&w, "a", 8 * GiB, 10.0);
    struct plan p;
    bt_err e = {0};
    cr_assert_eq(planner_plan(&pm, &w, 1, NULL, &p, &e), 0, "%s", e.msg);
    check_valid(&p, &pm, &w, 1);
    cr_assert_eq(p.n_stages, 1);
    /* 32 x 100 MiB + head 60 MiB read per token at 10 GB/s */
    double want = (double)(3200 + 60) * (double)MiB / 10e9 * 1e3;
    cr_assert_float_eq(p.stage[0].ms_per_token, want, 1e-9);
}

Test(planner, refuses_with_message) {
    struct plan_model pm;
    synth(&pm, 0);
    struct plan_worker w[2];
    worker(&w[0], "a", 1 * GiB, 10.0);
    worker(&w[1], "b", 1 * GiB, 10.0);
    struct plan p;
    bt_err e = {0};
    cr_assert_eq(planner_plan(&pm, w, 2, NULL, &p, &e), BT_ECAPACITY);
    cr_assert(strstr(e.msg, "model needs 3.2 GiB for weights + 0.3 GiB state"), "%s", e.msg);
    cr_assert(strstr(e.msg, "offer 2.0 GiB: add memory or workers"), "%s", e.msg);
}

Test(planner, refuses_when_no_split_fits) {
    /* Enough memory in total, but the layer granularity leaves every split over budget. */
    struct plan_model pm;
    synth(&pm, 0);
    struct plan_worker w[40];
    for (int i = 0; i < 40; i++) {
        char id[16];
        snprintf(id, sizeof id, "w%d", i);
        worker(&w[i], id, 100 * MiB, 10.0); /* a layer alone + state + overhead is 118 MiB */
    }
    struct plan p;
    bt_err e = {0};
    cr_assert_eq(planner_plan(&pm, w, 40, NULL, &p, &e), BT_ECAPACITY);
    cr_assert(strstr(e.msg, "no split of 32 layers fits"), "%s", e.msg);
}

Test(planner, balances_equal_workers) {
    struct plan_model pm;
    synth(&pm, 0);
    for (int n = 1; n <= 5; n++) {
        struct plan_worker w[5];
        for (int i = 0; i < n; i++) {
            char id[16];
            snprintf(id, sizeof id, "w%d", i);
            worker(&w[i], id, 8 * GiB, 10.0);
        }
        struct plan p;
        bt_err e = {0};
        cr_assert_eq(planner_plan(&pm, w, n, NULL, &p, &e), 0, "%s", e.msg);
        check_valid(&p, &pm, w, n);
        cr_assert_eq(p.n_stages, n, "n=%d: %d stages", n, p.n_stages);
        /* Ideal share of the 3260 MiB read per token, within one layer of granularity. */
        double ideal = (double)(3260 * MiB) / n / 10e9 * 1e3;
        double layer = (double)(100 * MiB) / 10e9 * 1e3;
        cr_assert_leq(p.bottleneck_ms, ideal + layer, "n=%d: %.3f vs %.3f", n, p.bottleneck_ms,
                      ideal);
    }
}

Test(planner, head_stage_gets_fewer_layers) {
    /* The LM head (60 MiB read per token) makes the last stage's layers count less. With a
     * head as big as 4 layers, two equal workers split 18 + 14. */
    struct plan_model pm;
    synth(&pm, 0);
    pm.last_bytes = 400 * MiB;
    struct plan_worker w[2];
    worker(&w[0], "a", 8 * GiB, 10.0);
    worker(&w[1], "b", 8 * GiB, 10.0);
    struct plan p;
    bt_err e = {0};
    cr_assert_eq(planner_plan(&pm, w, 2, NULL, &p, &e), 0, "%s", e.msg);
    check_valid(&p, &pm, w, 2);
    cr_assert_eq(p.stage[0].hi - p.stage[0].lo, 18);
    cr_assert_eq(p.stage[1].hi - p.stage[1].lo, 14);
}

Test(planner, leaves_out_slow_worker) {
    struct plan_model pm;
    synth(&pm, 0);
    struct plan_worker w[3];
    worker(&w[0], "fast1", 8 * GiB, 20.0);
    worker(&w[1], "slow", 8 * GiB, 2.0);
    worker(&w[2], "fast2", 8 * GiB, 20.0);
    struct plan p;
    bt_err e = {0};
    cr_assert_eq(planner_plan(&pm, w, 3, NULL, &p, &e), 0, "%s", e.msg);
    check_valid(&p, &pm, w, 3);
    cr_assert_eq(p.n_stages, 2);
    cr_assert_eq(p.n_left_out, 1);
    for (int s = 0; s < p.n_stages; s++)
        cr_assert_neq(p.stage[s].worker, 1, "the slow worker was used");
    char buf[2048];
    size_t n = planner_format(&p, &pm, w, 3, buf, sizeof buf);
    cr_assert_lt(n, sizeof buf);
    cr_assert(strstr(buf, "left out: worker=slow"), "%s", buf);
    cr_assert(strstr(buf, "stage 0: worker=fast"), "%s", buf);
    cr_assert(strstr(buf, "totals: stages=2 layers=32"), "%s", buf);
}

Test(planner, uses_slow_worker_when_memory_needs_it) {
    struct plan_model pm;
    synth(&pm, 0);
    struct plan_worker w[3];
    worker(&w[0], "fast1", 1536 * MiB, 20.0);
    worker(&w[1], "slow", 8 * GiB, 2.0);
    worker(&w[2], "fast2", 1536 * MiB, 20.0);
    struct plan p;
    bt_err e = {0};
    cr_assert_eq(planner_plan(&pm, w, 3, NULL, &p, &e), 0, "%s", e.msg);
    check_valid(&p, &pm, w, 3);
    cr_assert_eq(p.n_stages, 3);
    /* The fast workers are filled first: the slow one takes only what they cannot hold. */
    for (int s = 0; s < 3; s++)
        if (p.stage[s].worker == 1) cr_assert_leq(p.stage[s].hi - p.stage[s].lo, 32 - 2 * 12);
}

Test(planner, faster_worker_gets_more_layers) {
    struct plan_model pm;
    synth(&pm, 0);
    struct plan_worker w[2];
    worker(&w[0], "x1", 8 * GiB, 10.0);
    worker(&w[1], "x3", 8 * GiB, 30.0);
    struct plan p;
    bt_err e = {0};
    cr_assert_eq(planner_plan(&pm, w, 2, NULL, &p, &e), 0, "%s", e.msg);
    check_valid(&p, &pm, w, 2);
    cr_assert_eq(p.n_stages, 2);
    for (int s = 0; s < 2; s++) {
        int nl = p.stage[s].hi - p.stage[s].lo;
        if (p.stage[s].worker == 1)
            cr_assert_geq(nl, 23, "fast worker has %d layers", nl);
        else
            cr_assert_leq(nl, 9, "slow worker has %d layers", nl);
    }
}

Test(planner, tied_and_untied_charges) {
    for (int tied = 0; tied <= 1; tied++) {
        struct plan_model pm;
        synth(&pm, tied);
        struct plan_worker w[2];
        worker(&w[0], "a", 8 * GiB, 10.0);
        struct plan p;
        bt_err e = {0};
        cr_assert_eq(planner_plan(&pm, w, 1, NULL, &p, &e), 0, "%s", e.msg);
        check_valid(&p, &pm, w, 1);
        /* One stage holds the embedding once, even when it is also the head. */
        uint64_t want = 3200 * MiB + 50 * MiB + (tied ? 1024 : 60 * MiB);
        cr_assert_eq(p.stage[0].weight_bytes, want, "tied=%d", tied);
        worker(&w[1], "b", 8 * GiB, 10.0);
        cr_assert_eq(planner_plan(&pm, w, 2, NULL, &p, &e), 0, "%s", e.msg);
        check_valid(&p, &pm, w, 2);
        cr_assert_eq(p.n_stages, 2);
        /* Two stages: both ends hold the embedding when tied. */
        uint64_t ends = p.stage[0].weight_bytes + p.stage[1].weight_bytes;
        cr_assert_eq(ends, 3200 * MiB + 50 * MiB + (tied ? 50 * MiB + 1024 : 60 * MiB));
    }
}

Test(planner, memory_limits_shape_the_split) {
    /* A small first worker: it may hold no more than its budget allows. */
    struct plan_model pm;
    synth(&pm, 0);
    struct plan_worker w[2];
    worker(&w[0], "small", 600 * MiB, 10.0);
    worker(&w[1], "big", 8 * GiB, 10.0);
    struct plan p;
    bt_err e = {0};
    cr_assert_eq(planner_plan(&pm, w, 2, NULL, &p, &e), 0, "%s", e.msg);
    check_valid(&p, &pm, w, 2);
    cr_assert_eq(p.n_stages, 2);
    for (int s = 0; s < 2; s++)
        if (p.stage[s].worker == 0) cr_assert_leq(p.stage[s].total_bytes, 600 * MiB);
}

Test(planner, many_workers) {
    struct plan_model pm;
    synth(&pm, 0);
    struct plan_worker w[20];
    for (int i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof id, "w%d", i);
        worker(&w[i], id, 1 * GiB, 10.0 + i);
    }
    struct plan p;
    bt_err e = {0};
    cr_assert_eq(planner_plan(&pm, w, 20, NULL, &p, &e), 0, "%s", e.msg);
    check_valid(&p, &pm, w, 20);
    cr_assert_geq(p.n_stages, 4); /* 3.6 GiB cannot fit in fewer 1 GiB workers */
}

Test(planner, more_workers_than_layers) {
    struct plan_model pm;
    synth(&pm, 0);
    pm.n_layer = 3;
    struct plan_worker w[5];
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "w%d", i);
        worker(&w[i], id, 8 * GiB, 10.0);
    }
    struct plan p;
    bt_err e = {0};
    cr_assert_eq(planner_plan(&pm, w, 5, NULL, &p, &e), 0, "%s", e.msg);
    check_valid(&p, &pm, w, 5);
    cr_assert_leq(p.n_stages, 3);
}

Test(planner, rejects_bad_input) {
    struct plan_model pm;
    synth(&pm, 0);
    struct plan_worker w;
    worker(&w, "a", 8 * GiB, 0.0);
    struct plan p;
    bt_err e = {0};
    cr_assert_eq(planner_plan(&pm, &w, 1, NULL, &p, &e), BT_EINVAL);
    cr_assert(strstr(e.msg, "worker a"), "%s", e.msg);
    worker(&w, "a", 8 * GiB, 10.0);
    cr_assert_eq(planner_plan(&pm, &w, 0, NULL, &p, &e), BT_EINVAL);
    pm.n_layer = 0;
    cr_assert_eq(planner_plan(&pm, &w, 1, NULL, &p, &e), BT_EINVAL);
}

Test(planner, fixture_stage_bytes_match_model_range) {
    struct model_desc *m = NULL;
    bt_err e = {0};
    cr_assert_eq(model_open(&m, fixture_path("tiny-a/gguf/model-q8_0.gguf"), &e), 0, "%s", e.msg);
    struct plan_model pm;
    cr_assert_eq(planner_model_from_desc(&pm, m, 4, 256, 64, &e), 0, "%s", e.msg);
    cr_assert_eq(pm.n_layer, 8);
    cr_assert_eq(pm.shared_bytes, 0); /* tiny-a is untied */
    struct plan_worker w[3];
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "w%d", i);
        worker(&w[i], id, 1 * GiB, 10.0);
    }
    for (int n = 1; n <= 3; n++) {
        struct plan p;
        cr_assert_eq(planner_plan(&pm, w, n, NULL, &p, &e), 0, "%s", e.msg);
        check_valid(&p, &pm, w, n);
        cr_assert_eq(p.n_stages, n);
        for (int s = 0; s < p.n_stages; s++) {
            struct layer_range r;
            cr_assert_eq(model_range(m, p.stage[s].lo, p.stage[s].hi, &r, &e), 0, "%s", e.msg);
            free(r.tensors);
            cr_assert_eq(p.stage[s].weight_bytes, r.bytes, "n=%d stage %d: %llu vs %llu", n, s,
                         (unsigned long long)p.stage[s].weight_bytes, (unsigned long long)r.bytes);
        }
    }
    model_close(m);
}
