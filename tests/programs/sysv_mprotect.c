/* A SysV segment attached read-write whose first page was then made read-only: after restore
 * the second page is still writable, and the first can be made writable again. */
#include "ckpt_test.h"
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>

int main(int argc, char **argv) {
    long page = sysconf(_SC_PAGESIZE);
    ckpt_init(argc, argv);
    int id = shmget(IPC_PRIVATE, 2 * page, 0600 | IPC_CREAT);
    if (id < 0)
        ckpt_fail("shmget");
    char *mem = shmat(id, NULL, 0);
    if (mem == (void *)-1)
        ckpt_fail("shmat");
    shmctl(id, IPC_RMID, NULL);
    mem[0] = 'R';
    mem[page] = 'W';
    if (mprotect(mem, page, PROT_READ))
        ckpt_fail("mprotect");
    ckpt_ready();
    while (!ckpt_verify_requested)
        usleep(1000);
    mem[page] = 'w';  /* faults if the restore made the whole attach read-only */
    if (mem[0] != 'R' || mem[page] != 'w')
        ckpt_fail("the segment's content changed");
    if (mprotect(mem, page, PROT_READ | PROT_WRITE))
        ckpt_fail("the first page cannot be made writable again");
    ckpt_pass();
}
