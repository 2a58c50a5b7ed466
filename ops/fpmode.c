/* ops/fpmode.c: see fpmode.h. */
#include "ops/fpmode.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>

enum { MXCSR_DAZ = 1u << 6, MXCSR_FTZ = 1u << 15 };

fpmode_t fpmode_flush_denormals(void) {
    unsigned csr = _mm_getcsr();
    if ((csr & (MXCSR_DAZ | MXCSR_FTZ)) != (MXCSR_DAZ | MXCSR_FTZ))
        _mm_setcsr(csr | MXCSR_DAZ | MXCSR_FTZ);
    return csr;
}

void fpmode_restore(fpmode_t prev) {
    if (_mm_getcsr() != (unsigned)prev) _mm_setcsr((unsigned)prev);
}

#elif defined(__aarch64__)

enum { FPCR_FZ = 1ul << 24 };

static unsigned long fpcr_read(void) {
    unsigned long v;
    __asm__ volatile("mrs %0, fpcr" : "=r"(v));
    return v;
}
static void fpcr_write(unsigned long v) {
    __asm__ volatile("msr fpcr, %0" : : "r"(v));
}

fpmode_t fpmode_flush_denormals(void) {
    unsigned long fpcr = fpcr_read();
    if (!(fpcr & FPCR_FZ)) fpcr_write(fpcr | FPCR_FZ);
    return fpcr;
}

void fpmode_restore(fpmode_t prev) {
    if (fpcr_read() != prev) fpcr_write(prev);
}

#else

fpmode_t fpmode_flush_denormals(void) {
    return 0;
}
void fpmode_restore(fpmode_t prev) {
    (void)prev;
}

#endif
