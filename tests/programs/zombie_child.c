/* Three children that have ended but are not reaped (zombies) at checkpoint time: one exited
 * with a status, one was killed by a signal it could have caught, one by SIGKILL. After restore the parent reaps both and checks
 * their PIDs and how each ended. */
#include "ckpt_test.h"
#include <sys/wait.h>
#include <time.h>

static pid_t spawn(int how) {
    pid_t pid = fork();
    if (pid < 0) ckpt_fail("fork: %m");
    if (pid == 0) {
        if (how == SIGTERM || how == SIGKILL) raise(how);
        _exit(how);
    }
    siginfo_t info;
    memset(&info, 0, sizeof info);
    /* WNOWAIT: wait until it has ended, but leave it a zombie */
    if (waitid(P_PID, pid, &info, WEXITED | WNOWAIT) != 0) ckpt_fail("waitid: %m");
    return pid;
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    pid_t exited = spawn(42);
    pid_t killed = spawn(SIGTERM);
    pid_t shot = spawn(SIGKILL);
    ckpt_ready();
    while (!ckpt_verify_requested) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    int status;
    if (waitpid(exited, &status, 0) != exited) ckpt_fail("waitpid(%d): %m", exited);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 42)
        ckpt_fail("child %d: status %#x, expected exit 42", exited, status);
    if (waitpid(killed, &status, 0) != killed) ckpt_fail("waitpid(%d): %m", killed);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGTERM)
        ckpt_fail("child %d: status %#x, expected killed by SIGTERM", killed, status);
    if (waitpid(shot, &status, 0) != shot) ckpt_fail("waitpid(%d): %m", shot);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
        ckpt_fail("child %d: status %#x, expected killed by SIGKILL", shot, status);
    if (waitpid(-1, &status, WNOHANG) != -1) ckpt_fail("a third child appeared");
    ckpt_pass();
}
