/* zdtm's helper_zombie_child inside the tree: a child subreaper whose helper child forks a
 * child that exits, then exits itself; the subreaper reaps the helper only, so the orphaned
 * grandchild is its zombie. With "setsid" the helper made a session of its own first, which
 * the zombie keeps. After restore the zombie must still be there for the subreaper to reap. */
#include "ckpt_test.h"
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    int own_session = argc > 2 && !strcmp(argv[1], "setsid");
    int report[2];
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) || pipe(report)) ckpt_fail("setup: %m");
    pid_t helper = fork();
    if (helper < 0) ckpt_fail("fork: %m");
    if (helper == 0) {
        if (own_session) setsid();
        pid_t zombie = fork();
        if (zombie == 0) _exit(7);
        siginfo_t info;
        if (waitid(P_PID, zombie, &info, WEXITED | WNOWAIT)) _exit(1);
        if (write(report[1], &zombie, sizeof zombie) != sizeof zombie) _exit(1);
        _exit(0);
    }
    pid_t zombie;
    if (read(report[0], &zombie, sizeof zombie) != sizeof zombie) ckpt_fail("no zombie reported");
    int status;
    if (waitpid(helper, &status, 0) != helper || status) ckpt_fail("helper: %#x", status);
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (waitid(P_PID, zombie, &info, WEXITED | WNOWAIT)) ckpt_fail("the zombie is not ours: %m");
    ckpt_ready();
    while (!ckpt_verify_requested) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    if (waitpid(zombie, &status, 0) != zombie) ckpt_fail("zombie %d did not survive: %m", zombie);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 7) ckpt_fail("zombie status %#x", status);
    ckpt_pass();
}
