/* A MAP_DROPPABLE mapping (as glibc 2.41+ allocates for getrandom's state), written to. */
#include "ckpt_test.h"
#include <sys/mman.h>

#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_DROPPABLE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        ckpt_fail("mmap(MAP_DROPPABLE)");
    p[0] = 1;
    ckpt_ready();
    while (!ckpt_verify_requested)
        usleep(1000);
    ckpt_pass();
}
