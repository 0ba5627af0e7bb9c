/* A process tree whose state a checkpoint cannot bring back as it is, found with CRIU's
 * zdtm suite, and that checks afterwards that it still holds:
 *
 *   shared_tables MODE STATUS_FILE
 *
 *   files    a clone(CLONE_FILES) child shares its parent's file descriptor table: an fd
 *            the parent opens after the clone is seen by the child
 *   fs       a clone(CLONE_FS) child shares cwd and umask: the parent's umask() after the
 *            clone is the child's
 *   sighand  a clone(CLONE_VM|CLONE_SIGHAND) child (the kernel wants both) shares the
 *            signal handlers: one the parent installs after the clone is the child's
 *   plain    no child (a test stops it from outside, for instance)
 *   mlock_setuid  an mlocked page, then the process drops root for uid/gid 65534
 *   setuid   the process drops root for uid/gid 65534 (and checks it still has them)
 *
 * After setting up it writes "ready" and appends one byte to STATUS.tick every 10 ms until
 * SIGUSR1 (sent to the child, then the parent); then the child checks the sharing and
 * exits, and the parent appends "PASS" or "FAIL <why>". Status and tick files are opened
 * before anything else, so that they stay writable after dropping root.
 */
#include "ckpt_test.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#define SHARED_FD 100
#define SHARED_UMASK 027
#define STACK_SIZE (256 * 1024)

static int status_fd, tick_fd;

static void say(const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    buf[n++] = '\n';
    if (write(status_fd, buf, n) != n) _exit(3);
}

static void wait_for_verify(int tick) {
    struct timespec pause = {.tv_nsec = 10000000};
    while (!ckpt_verify_requested) {
        nanosleep(&pause, NULL);
        if (tick && write(tick_fd, ".", 1) != 1) _exit(5);
    }
}

static void on_usr2(int sig) { (void)sig; }

/* The child: waits for SIGUSR1, then exits 0 if it still shares what `mode` names. */
static int child_main(void *arg) {
    const char *mode = arg;
    wait_for_verify(0);
    if (!strcmp(mode, "files"))
        _exit(fcntl(SHARED_FD, F_GETFD) >= 0 ? 0 : 1);
    if (!strcmp(mode, "fs"))
        _exit(umask(0) == SHARED_UMASK ? 0 : 1);
    struct sigaction sa;
    sigaction(SIGUSR2, NULL, &sa);
    _exit(sa.sa_handler == on_usr2 ? 0 : 1);
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    if (argc != 3) { fprintf(stderr, "usage: %s MODE STATUS_FILE\n", argv[0]); return 2; }
    const char *mode = argv[1];
    char path[4096];
    status_fd = open(ckpt_status_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    snprintf(path, sizeof path, "%s.tick", ckpt_status_path);
    tick_fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (status_fd < 0 || tick_fd < 0) return 3;

    pid_t child = 0;
    if (!strcmp(mode, "files") || !strcmp(mode, "fs") || !strcmp(mode, "sighand")) {
        int flags = !strcmp(mode, "files") ? CLONE_FILES
                  : !strcmp(mode, "fs") ? CLONE_FS : CLONE_VM | CLONE_SIGHAND;
        char *stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED) { say("FAIL mmap: %s", strerror(errno)); return 1; }
        child = clone(child_main, stack + STACK_SIZE, flags | SIGCHLD, (void *)mode);
        if (child < 0) { say("FAIL clone: %s", strerror(errno)); return 1; }
        /* changed after the clone: only sharing makes the child see it */
        int fd = open("/dev/null", O_RDONLY);
        struct sigaction sa = {.sa_handler = on_usr2};
        if (fd < 0 || dup2(fd, SHARED_FD) != SHARED_FD || close(fd) < 0
            || sigaction(SIGUSR2, &sa, NULL) < 0) {
            say("FAIL setting up: %s", strerror(errno));
            return 1;
        }
        umask(SHARED_UMASK);
    } else if (!strcmp(mode, "mlock_setuid") || !strcmp(mode, "setuid")) {
        char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED || (mode[0] == 'm' && mlock(p, 4096) < 0) || setgroups(0, NULL) < 0
            || setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0) {
            say("FAIL setting up: %s", strerror(errno));
            return 1;
        }
        p[0] = 1;
    } else if (strcmp(mode, "plain")) {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    say("ready");
    wait_for_verify(1);
    if (child) {
        int status;
        if (waitpid(child, &status, 0) != child || status != 0) {
            say("FAIL the %s child no longer shares it (status %d)", mode, status);
            return 1;
        }
    }
    uid_t r, e, s;
    if (!strcmp(mode, "setuid") && (getresuid(&r, &e, &s) < 0 || r != 65534 || e != 65534 || s != 65534)) {
        say("FAIL uids %d %d %d", r, e, s);
        return 1;
    }
    say("PASS");
    return 0;
}
