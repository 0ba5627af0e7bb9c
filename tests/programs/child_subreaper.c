/* A child subreaper (PR_SET_CHILD_SUBREAPER, set after its children were forked) with a
 * child whose own child will be orphaned. After restore the flag must still be set and, once
 * the middle process exits, the orphan must become the subreaper's child (not init's). */
#include "ckpt_test.h"
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

static void wait_for_close(int fd) {
    char c;
    while (read(fd, &c, 1) < 0) {}  /* (EINTR) until the other end closes */
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    int up[2], die[2], check[2], report[2];
    if (pipe(up) || pipe(die) || pipe(check) || pipe(report)) ckpt_fail("pipe: %m");
    pid_t middle = fork();
    if (middle < 0) ckpt_fail("fork: %m");
    if (middle == 0) {
        pid_t orphan = fork();
        if (orphan == 0) {
            close(up[0]), close(up[1]), close(die[0]), close(die[1]);
            close(check[1]), close(report[0]);
            wait_for_close(check[0]);
            pid_t parent = getppid();
            if (write(report[1], &parent, sizeof parent) != sizeof parent) _exit(2);
            _exit(0);
        }
        close(up[0]), close(die[1]), close(check[0]), close(check[1]);
        close(report[0]), close(report[1]);
        close(up[1]);  /* the orphan-to-be exists */
        wait_for_close(die[0]);
        _exit(0);
    }
    close(up[1]), close(die[0]), close(check[0]), close(report[1]);
    wait_for_close(up[0]);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) ckpt_fail("PR_SET_CHILD_SUBREAPER: %m");
    ckpt_ready();
    while (!ckpt_verify_requested) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    int flag = 0;
    if (prctl(PR_GET_CHILD_SUBREAPER, &flag, 0, 0, 0)) ckpt_fail("PR_GET_CHILD_SUBREAPER: %m");
    if (flag != 1) ckpt_fail("no longer a child subreaper (%d)", flag);
    close(die[1]);
    int status;
    if (waitpid(middle, &status, 0) != middle) ckpt_fail("waitpid(%d): %m", middle);
    close(check[1]);
    pid_t seen = 0;
    if (read(report[0], &seen, sizeof seen) != sizeof seen) ckpt_fail("no report from the orphan");
    if (seen != getpid()) ckpt_fail("the orphan was re-parented to %d, not to us (%d)", seen, getpid());
    if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
        ckpt_fail("the orphan did not end well for us to reap (%#x)", status);
    ckpt_pass();
}
