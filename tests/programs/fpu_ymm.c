/* AVX state across a checkpoint: ymm8-ymm15 hold 256-bit patterns (upper halves included)
 * and ymm0-ymm3 accumulate four doubles each (packed adds) while a counter lives in a general
 * register; only VEX-encoded instructions run inside the loop. After restore every lane must
 * equal its step times the counter, and every pattern must be intact. (Needs AVX.)
 */
#include "ckpt_test.h"
#include <stdint.h>

static uint64_t patterns[8][4] __attribute__((aligned(32)));
static uint64_t patterns_after[8][4] __attribute__((aligned(32)));
static const double steps[4][4] __attribute__((aligned(32))) = {
    {1.0, 2.0, 3.0, 4.0}, {0.5, 0.25, 0.125, 8.0}, {5.0, 6.0, 7.0, 9.0}, {16.0, 32.0, 64.0, 0.0625}};
static double sums[4][4] __attribute__((aligned(32)));

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++)
            patterns[i][j] = (0x9e3779b97f4a7c15ULL * (uint64_t)(4 * i + j + 1)) ^ ((uint64_t)j << 60);
    ckpt_ready();

    long count = 0;
    __asm__ volatile(
        "vmovdqa 0x000(%[pat]), %%ymm8\n\t"
        "vmovdqa 0x020(%[pat]), %%ymm9\n\t"
        "vmovdqa 0x040(%[pat]), %%ymm10\n\t"
        "vmovdqa 0x060(%[pat]), %%ymm11\n\t"
        "vmovdqa 0x080(%[pat]), %%ymm12\n\t"
        "vmovdqa 0x0a0(%[pat]), %%ymm13\n\t"
        "vmovdqa 0x0c0(%[pat]), %%ymm14\n\t"
        "vmovdqa 0x0e0(%[pat]), %%ymm15\n\t"
        "vxorpd %%ymm0, %%ymm0, %%ymm0\n\t"
        "vxorpd %%ymm1, %%ymm1, %%ymm1\n\t"
        "vxorpd %%ymm2, %%ymm2, %%ymm2\n\t"
        "vxorpd %%ymm3, %%ymm3, %%ymm3\n\t"
        "1:\n\t"
        "vaddpd 0x00(%[st]), %%ymm0, %%ymm0\n\t"
        "vaddpd 0x20(%[st]), %%ymm1, %%ymm1\n\t"
        "vaddpd 0x40(%[st]), %%ymm2, %%ymm2\n\t"
        "vaddpd 0x60(%[st]), %%ymm3, %%ymm3\n\t"
        "incq %[n]\n\t"
        "cmpl $0, %[flag]\n\t"
        "je 1b\n\t"
        "vmovapd %%ymm0, 0x00(%[sums])\n\t"
        "vmovapd %%ymm1, 0x20(%[sums])\n\t"
        "vmovapd %%ymm2, 0x40(%[sums])\n\t"
        "vmovapd %%ymm3, 0x60(%[sums])\n\t"
        "vmovdqa %%ymm8, 0x000(%[after])\n\t"
        "vmovdqa %%ymm9, 0x020(%[after])\n\t"
        "vmovdqa %%ymm10, 0x040(%[after])\n\t"
        "vmovdqa %%ymm11, 0x060(%[after])\n\t"
        "vmovdqa %%ymm12, 0x080(%[after])\n\t"
        "vmovdqa %%ymm13, 0x0a0(%[after])\n\t"
        "vmovdqa %%ymm14, 0x0c0(%[after])\n\t"
        "vmovdqa %%ymm15, 0x0e0(%[after])\n\t"
        "vzeroupper\n\t"
        : [n] "+r"(count)
        : [pat] "r"(patterns), [st] "r"(steps), [sums] "r"(sums), [after] "r"(patterns_after),
          [flag] "m"(ckpt_verify_requested)
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",
          "xmm14", "xmm15", "memory", "cc");

    if (count < 1) ckpt_fail("loop never ran");
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            if (sums[i][j] != steps[i][j] * (double)count)
                ckpt_fail("ymm%d lane %d holds %.17g, expected %.17g (count %ld)", i, j, sums[i][j],
                          steps[i][j] * (double)count, count);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++)
            if (patterns[i][j] != patterns_after[i][j])
                ckpt_fail("ymm%d qword %d is %016llx, expected %016llx", i + 8, j,
                          (unsigned long long)patterns_after[i][j], (unsigned long long)patterns[i][j]);
    ckpt_pass();
}
