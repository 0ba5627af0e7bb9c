/* A process whose filesystem uid and gid (setfsuid/setfsgid) differ from its effective
 * ones, as a file server sets them. After restore they must be the same. */
#include "ckpt_test.h"
#include <sys/fsuid.h>
#include <time.h>

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    /* fsgid 8 is none of real, effective and saved: settable only before the uids change.
     * fsuid 0 (the real uid) keeps the status file writable while the effective uid is 2. */
    if (setresgid(5, 6, 7) || setfsgid(8) < 0 || setresuid(0, 2, 3) || setfsuid(0) < 0)
        ckpt_fail("set ids: %m");
    if (setfsgid(-1) != 8 || setfsuid(-1) != 0) ckpt_fail("setfs[ug]id did not take");
    ckpt_ready();
    while (!ckpt_verify_requested) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    int fsuid = setfsuid(-1), fsgid = setfsgid(-1);
    setfsuid(0);  /* (to write the verdict, whatever came back) */
    if (fsuid != 0 || fsgid != 8) ckpt_fail("fsuid %d, fsgid %d: expected 0 and 8", fsuid, fsgid);
    ckpt_pass();
}
