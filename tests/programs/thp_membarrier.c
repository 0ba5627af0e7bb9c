/* Per-address-space settings only the process can read back: PR_SET_THP_DISABLE (here
 * "except where advised") and membarrier() registrations. After restore both must be as set. */
#include "ckpt_test.h"
#include <linux/membarrier.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>

#ifndef PR_THP_DISABLE_EXCEPT_ADVISED
#define PR_THP_DISABLE_EXCEPT_ADVISED (1 << 1)
#endif
#define GET_REGISTRATIONS (1 << 9)  /* Linux 6.3 */
#define REGISTERED (MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED | MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)

static long membarrier(int cmd) { return syscall(SYS_membarrier, cmd, 0, 0); }

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    if (prctl(PR_SET_THP_DISABLE, 1, PR_THP_DISABLE_EXCEPT_ADVISED, 0, 0))
        ckpt_fail("PR_SET_THP_DISABLE: %m");
    if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)
            || membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED))
        ckpt_fail("membarrier register: %m");
    long before = membarrier(GET_REGISTRATIONS);
    if (before != REGISTERED) ckpt_fail("registrations %#lx before the checkpoint", before);
    ckpt_ready();
    while (!ckpt_verify_requested) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    int thp = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
    if (thp != (1 | PR_THP_DISABLE_EXCEPT_ADVISED)) ckpt_fail("PR_GET_THP_DISABLE: %d, expected 3", thp);
    long after = membarrier(GET_REGISTRATIONS);
    if (after != REGISTERED) ckpt_fail("registrations %#lx, expected %#x", after, REGISTERED);
    if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)) ckpt_fail("private expedited membarrier: %m");
    ckpt_pass();
}
