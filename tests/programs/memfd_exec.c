/* A script in a memfd, run with execveat(AT_EMPTY_PATH), with a read-only second open
 * and a shared mapping of it beside (as zdtm's memfd04 and memfd05). It runs before the
 * checkpoint and must run after restore: no extra writer may hold the memfd (ETXTBSY). */
#include "ckpt_test.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

static const char script[] = "#!/bin/true\n";

static int run(int fd) {
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {"true", NULL}, *envp[] = {NULL};
        syscall(SYS_execveat, fd, "", argv, envp, AT_EMPTY_PATH);
        _exit(100 + errno);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) ckpt_fail("fork/waitpid: %m");
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    int fd = memfd_create("script", 0);
    if (fd < 0 || write(fd, script, sizeof script - 1) != sizeof script - 1) ckpt_fail("memfd: %m");
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int rofd = open(path, O_RDONLY);
    if (rofd < 0) ckpt_fail("open %s: %m", path);
    char *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (shared == MAP_FAILED) ckpt_fail("mmap: %m");
    int before = run(fd);
    if (before) ckpt_fail("execveat before the checkpoint: status %d", before);
    ckpt_ready();
    while (!ckpt_verify_requested) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    int after = run(fd);
    if (after) ckpt_fail("execveat after restore: status %d (100 + errno %d)", after, after - 100);
    if (memcmp(shared, script, sizeof script - 1)) ckpt_fail("the shared mapping lost the script");
    ckpt_pass();
}
