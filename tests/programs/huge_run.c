/* One anonymous mapping larger than 2 GiB, every page written: the kernel moves at most
 * 2 GiB per process_vm_readv/writev call, so this takes more than one per run. */
#include "ckpt_test.h"
#include <stdint.h>
#include <sys/mman.h>

#define SIZE ((size_t)9 << 28) /* 2.25 GiB */

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    uint64_t *mem = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) ckpt_fail("mmap");
    for (size_t page = 0; page < SIZE / 4096; page++)
        mem[page * 512] = page * 2654435761u + 1;
    ckpt_ready();
    while (!ckpt_verify_requested) pause();
    for (size_t page = 0; page < SIZE / 4096; page++)
        if (mem[page * 512] != page * 2654435761u + 1)
            ckpt_fail("page %zu holds %lu", page, (unsigned long)mem[page * 512]);
    ckpt_pass();
}
