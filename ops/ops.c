/* ops/ops.c: ISA detection and table choice (see ops.h). The SIMD tables are strong references
 * on purpose: a weak one would not pull ops_avx2.o / ops_avx512.o (ops_neon.o on AArch64) out of
 * libbaton.a, and the build would silently fall back to the scalar kernels. */
#include "ops/ops.h"

#include "common/log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__aarch64__)
#include <sys/auxv.h>

extern const struct ops_table ops_neon;
extern const matmul_q_fn ops_neon_dotprod_matmul_q[DT_COUNT];

enum { ISA_NEON_DOTPROD, ISA_NEON, ISA_REF, ISA_COUNT };
#else
#include <cpuid.h>

extern const struct ops_table ops_avx2;
extern const struct ops_table ops_avx512;
extern const matmul_q_fn ops_avx512vnni_matmul_q[DT_COUNT];

enum { ISA_AVX512VNNI, ISA_AVX512, ISA_AVX2, ISA_REF, ISA_COUNT };
#endif

const struct ops_table *ops;

static struct ops_table filled[ISA_COUNT]; /* each ISA's table with NULL slots from ref */
static const char *avail[ISA_COUNT + 1];   /* NULL-terminated, best first */
static int supported[ISA_COUNT];
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;

/* Copies ref into every slot the ISA table leaves NULL. Slots are compared as bytes of
 * function pointers, which is what the table is made of besides the name. */
static void fill(struct ops_table *dst, const struct ops_table *src) {
    *dst = *src;
    for (int t = 0; t < DT_COUNT; t++) {
        if (!dst->matmul[t]) dst->matmul[t] = ops_ref.matmul[t];
        /* every table computes the quantized path where ref defines one, so the function an
         * ISA computes never depends on which kernels it happens to have */
        if (!dst->matmul_q[t]) dst->matmul_q[t] = ops_ref.matmul_q[t];
        if (!dst->dequantize_row[t]) dst->dequantize_row[t] = ops_ref.dequantize_row[t];
        if (!dst->quantize_row[t]) dst->quantize_row[t] = ops_ref.quantize_row[t];
        if (!dst->quantize_act[t]) dst->quantize_act[t] = ops_ref.quantize_act[t];
    }
#define FILL(f)                                                                                    \
    if (!dst->f) dst->f = ops_ref.f
    FILL(rmsnorm);
    FILL(gated_rmsnorm);
    FILL(l2norm_scale);
    FILL(rope_neox);
    FILL(conv1d_step);
    FILL(delta_rule_step);
    FILL(delta_rule_chunk);
    FILL(conv1d_seq);
    FILL(attention);
    FILL(silu_mul);
    FILL(add);
    FILL(softmax);
#undef FILL
}

#if defined(__aarch64__)
/* AArch64: Advanced SIMD is in every armv8-a Linux CPU, but the kernel says so (HWCAP_ASIMD);
 * sdot (armv8.2 dot product, optional before armv8.4) is HWCAP_ASIMDDP. */
static void setup(void) {
    unsigned long hw = getauxval(AT_HWCAP);
    supported[ISA_NEON] = (hw & HWCAP_ASIMD) != 0;
    /* the sdot kernels exist unless the compiler could not build them (ops_neon.c) */
    supported[ISA_NEON_DOTPROD] =
        supported[ISA_NEON] && (hw & HWCAP_ASIMDDP) != 0 && ops_neon_dotprod_matmul_q[DT_Q8_0];
    supported[ISA_REF] = 1;
    const struct ops_table *src[ISA_COUNT] = {&ops_neon, &ops_neon, &ops_ref};
    int n = 0;
    for (int i = 0; i < ISA_COUNT; i++) {
        if (!supported[i]) continue;
        fill(&filled[i], src[i]);
        if (i == ISA_NEON_DOTPROD) { /* the NEON table with the sdot integer dot products */
            filled[i].isa = "neon-dotprod";
            for (int t = 0; t < DT_COUNT; t++)
                if (ops_neon_dotprod_matmul_q[t])
                    filled[i].matmul_q[t] = ops_neon_dotprod_matmul_q[t];
        }
        avail[n++] = filled[i].isa;
    }
    avail[n] = NULL;
}
#else
static void setup(void) {
    __builtin_cpu_init();
    /* clang 14 has no "f16c" for __builtin_cpu_supports: read CPUID leaf 1, ECX bit 29. The
     * avx2/avx512 checks below already include the OS's saving of the vector state. */
    unsigned a, b, c, d;
    int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    int fma_f16c = __builtin_cpu_supports("fma") && f16c;
    supported[ISA_AVX512] =
        fma_f16c && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    /* AVX512_VNNI: CPUID leaf 7, ECX bit 11 (the OS state check is the avx512 one above) */
    int vnni = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & (1u << 11));
    supported[ISA_AVX512VNNI] = supported[ISA_AVX512] && vnni;
    supported[ISA_AVX2] = fma_f16c && __builtin_cpu_supports("avx2");
    supported[ISA_REF] = 1;
    const struct ops_table *src[ISA_COUNT] = {&ops_avx512, &ops_avx512, &ops_avx2, &ops_ref};
    int n = 0;
    for (int i = 0; i < ISA_COUNT; i++) {
        if (!supported[i]) continue;
        fill(&filled[i], src[i]);
        if (i == ISA_AVX512VNNI) { /* the AVX-512 table with the VNNI integer dot products */
            filled[i].isa = "avx512vnni";
            for (int t = 0; t < DT_COUNT; t++)
                if (ops_avx512vnni_matmul_q[t]) filled[i].matmul_q[t] = ops_avx512vnni_matmul_q[t];
        }
        avail[n++] = filled[i].isa;
    }
    avail[n] = NULL;
}
#endif

const char *const *ops_available_isas(void) {
    pthread_once(&once, setup);
    return avail;
}

const struct ops_table *ops_table_for(const char *isa) {
    pthread_once(&once, setup);
    for (int i = 0; i < ISA_COUNT; i++)
        if (supported[i] && isa && !strcmp(filled[i].isa, isa)) return &filled[i];
    return NULL;
}

static int exact_act = -1; /* -1: not decided yet ($BT_EXACT at the first ops_init) */

void ops_set_exact(int on) {
    exact_act = on != 0;
}

int ops_exact(void) {
    return exact_act == 1;
}

int ops_init(const char *force_isa, bt_err *e) {
    pthread_once(&once, setup);
    if (exact_act < 0) {
        const char *ex = getenv("BT_EXACT");
        exact_act = ex && *ex && strcmp(ex, "0") != 0;
    }
    const char *want = force_isa && *force_isa ? force_isa : getenv("BT_ISA");
    const struct ops_table *t = avail[0] ? ops_table_for(avail[0]) : NULL;
    if (want && *want) {
        t = ops_table_for(want);
        if (!t)
            return bt_fail(e, BT_EUNSUPPORTED, "ops: isa '%s' unknown or not supported by this CPU",
                           want);
    }
    pthread_mutex_lock(&init_lock);
    int changed = ops != t;
    ops = t;
    pthread_mutex_unlock(&init_lock);
    if (changed)
        BT_LOG(INFO, "ops", "isa=%s act=%s (override with BT_ISA=, BT_EXACT=1)", t->isa,
               exact_act == 1 ? "f32" : "quantized");
    return 0;
}
