/* ops/fpmode.h: the floating-point mode compute jobs run in.
 *
 * Contract: fpmode_flush_denormals() makes the calling thread flush subnormal floats to zero,
 * as inputs and as results (x86: MXCSR FTZ and DAZ; AArch64: FPCR.FZ; elsewhere nothing), and
 * returns the mode it replaced; fpmode_restore() puts that mode back. Both are cheap (a
 * control-register read and at most one write) and only touch the calling thread.
 *
 * Why: the Gated DeltaNet state decays by exp(g) every token, and a head with a strong decay
 * drives state products below FLT_MIN, where every multiply and add takes a microcode assist.
 * On the 9B q4_k_m, a decode step of 16 sequences spent 150-320 ms in the delta rule against
 * 22 ms flushed. Values under 1.2e-38 do not change any logit, and every ISA table runs under
 * the same mode (threadpool.h), so results still agree across tables. */
#ifndef BT_OPS_FPMODE_H
#define BT_OPS_FPMODE_H

typedef unsigned long fpmode_t;

fpmode_t fpmode_flush_denormals(void);
void fpmode_restore(fpmode_t prev);

#endif
