/* Floating point state held only in registers across a checkpoint.
 *
 * Main thread: an inline-asm loop keeps eight double accumulators in xmm0-xmm7 (each adds its
 * own step per iteration) and an iteration counter in a general register, while xmm8-xmm15
 * hold fixed bit patterns; nothing of it is in memory while the loop spins.
 * Second thread: a plain C loop compiled -O2 whose double accumulators live in registers.
 * MXCSR (rounding mode, flush-to-zero) and the x87 control word are set to non-defaults.
 * After restore each accumulator must equal step * counter exactly (all values stay well
 * below 2^53, so every sum is exact) and every pattern must be intact.
 */
#include "ckpt_test.h"
#include <pthread.h>
#include <stdint.h>

#define MXCSR_WANT (0x1f80 | (3u << 13) | (1u << 15)) /* masks, round toward zero, FTZ */
#define X87_CW_WANT 0x0e7f /* all masked, extended precision, round toward zero */

static const double steps[8] = {1.0, 0.5, 0.25, 2.0, 3.0, 0.125, 7.0, 1024.0};
static uint64_t patterns[8][2];
static uint64_t patterns_after[8][2];
static double sums[8];

static volatile int c_loop_started;
static double c_x, c_y, c_z;
static long c_n;

static void *c_loop(void *arg) {
    (void)arg;
    double x = 0, y = 0, z = 0;
    long n = 0;
    c_loop_started = 1;
    while (!ckpt_verify_requested) {
        x += 1.0;
        y += 0.25;
        z += 3.0;
        n++;
    }
    c_x = x, c_y = y, c_z = z, c_n = n;
    return NULL;
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    for (int i = 0; i < 8; i++) {
        patterns[i][0] = 0x0123456789abcdefULL * (uint64_t)(i + 1) ^ 0x5a5a5a5a5a5a5a5aULL;
        patterns[i][1] = 0xfedcba9876543210ULL + (uint64_t)i * 0x1111111111111111ULL;
    }
    unsigned mxcsr = MXCSR_WANT;
    unsigned short cw = X87_CW_WANT;
    __asm__ volatile("ldmxcsr %0" ::"m"(mxcsr));
    __asm__ volatile("fldcw %0" ::"m"(cw));

    pthread_t th;
    if (pthread_create(&th, NULL, c_loop, NULL)) ckpt_fail("pthread_create");
    while (!c_loop_started) ;
    ckpt_ready();

    long count = 0;
    __asm__ volatile(
        "movdqu 0x00(%[pat]), %%xmm8\n\t"
        "movdqu 0x10(%[pat]), %%xmm9\n\t"
        "movdqu 0x20(%[pat]), %%xmm10\n\t"
        "movdqu 0x30(%[pat]), %%xmm11\n\t"
        "movdqu 0x40(%[pat]), %%xmm12\n\t"
        "movdqu 0x50(%[pat]), %%xmm13\n\t"
        "movdqu 0x60(%[pat]), %%xmm14\n\t"
        "movdqu 0x70(%[pat]), %%xmm15\n\t"
        "xorpd %%xmm0, %%xmm0\n\t"
        "xorpd %%xmm1, %%xmm1\n\t"
        "xorpd %%xmm2, %%xmm2\n\t"
        "xorpd %%xmm3, %%xmm3\n\t"
        "xorpd %%xmm4, %%xmm4\n\t"
        "xorpd %%xmm5, %%xmm5\n\t"
        "xorpd %%xmm6, %%xmm6\n\t"
        "xorpd %%xmm7, %%xmm7\n\t"
        "1:\n\t"
        "addsd 0x00(%[st]), %%xmm0\n\t"
        "addsd 0x08(%[st]), %%xmm1\n\t"
        "addsd 0x10(%[st]), %%xmm2\n\t"
        "addsd 0x18(%[st]), %%xmm3\n\t"
        "addsd 0x20(%[st]), %%xmm4\n\t"
        "addsd 0x28(%[st]), %%xmm5\n\t"
        "addsd 0x30(%[st]), %%xmm6\n\t"
        "addsd 0x38(%[st]), %%xmm7\n\t"
        "incq %[n]\n\t"
        "cmpl $0, %[flag]\n\t"
        "je 1b\n\t"
        "movsd %%xmm0, 0x00(%[sums])\n\t"
        "movsd %%xmm1, 0x08(%[sums])\n\t"
        "movsd %%xmm2, 0x10(%[sums])\n\t"
        "movsd %%xmm3, 0x18(%[sums])\n\t"
        "movsd %%xmm4, 0x20(%[sums])\n\t"
        "movsd %%xmm5, 0x28(%[sums])\n\t"
        "movsd %%xmm6, 0x30(%[sums])\n\t"
        "movsd %%xmm7, 0x38(%[sums])\n\t"
        "movdqu %%xmm8, 0x00(%[after])\n\t"
        "movdqu %%xmm9, 0x10(%[after])\n\t"
        "movdqu %%xmm10, 0x20(%[after])\n\t"
        "movdqu %%xmm11, 0x30(%[after])\n\t"
        "movdqu %%xmm12, 0x40(%[after])\n\t"
        "movdqu %%xmm13, 0x50(%[after])\n\t"
        "movdqu %%xmm14, 0x60(%[after])\n\t"
        "movdqu %%xmm15, 0x70(%[after])\n\t"
        : [n] "+r"(count)
        : [pat] "r"(patterns), [st] "r"(steps), [sums] "r"(sums), [after] "r"(patterns_after),
          [flag] "m"(ckpt_verify_requested)
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
          "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");

    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    if (pthread_join(th, NULL)) ckpt_fail("pthread_join");

    if (count < 1) ckpt_fail("asm loop never ran");
    for (int i = 0; i < 8; i++)
        if (sums[i] != steps[i] * (double)count)
            ckpt_fail("xmm%d holds %.17g, expected %.17g (count %ld)", i, sums[i],
                      steps[i] * (double)count, count);
    for (int i = 0; i < 8; i++)
        if (memcmp(patterns[i], patterns_after[i], 16))
            ckpt_fail("xmm%d pattern changed: %016llx%016llx", i + 8,
                      (unsigned long long)patterns_after[i][1], (unsigned long long)patterns_after[i][0]);
    if ((mxcsr & ~0x3fu) != MXCSR_WANT) ckpt_fail("mxcsr %#x, expected %#x", mxcsr, MXCSR_WANT);
    if (cw != X87_CW_WANT) ckpt_fail("x87 control word %#x, expected %#x", cw, X87_CW_WANT);
    if (c_n < 1) ckpt_fail("C loop never ran");
    if (c_x != (double)c_n || c_y != 0.25 * (double)c_n || c_z != 3.0 * (double)c_n)
        ckpt_fail("C loop: x=%.17g y=%.17g z=%.17g for n=%ld", c_x, c_y, c_z, c_n);
    ckpt_pass();
}
