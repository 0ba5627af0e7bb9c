/* A parent with three fork()ed children and one exited (zombie) child. They share a
 * MAP_SHARED anonymous region and two pipes; each keeps copy-on-write private memory that
 * diverged after fork. After restore the parent drives a round of work and checks it all. */
#include "ckpt_test.h"
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define NCHILD 3
#define PRIVATE_SIZE (1 << 20)

struct shared {
    volatile int go;
    volatile int done[NCHILD];
    volatile long seen[NCHILD];
    char pattern[1 << 16];
};

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < sizeof sh->pattern; i++) sh->pattern[i] = (char)(i * 7);
    unsigned char *priv = malloc(PRIVATE_SIZE);
    memset(priv, 0x11, PRIVATE_SIZE);
    int to_children[2], to_parent[2];
    if (pipe(to_children) || pipe(to_parent)) ckpt_fail("pipe");
    pid_t kids[NCHILD];
    for (int i = 0; i < NCHILD; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            memset(priv, 0x20 + i, PRIVATE_SIZE);  /* diverge from the parent's copy */
            while (!sh->go) usleep(1000);
            char token;
            if (read(to_children[0], &token, 1) != 1) _exit(10);
            for (size_t k = 0; k < PRIVATE_SIZE; k++)
                if (priv[k] != 0x20 + i) _exit(11);
            for (size_t k = 0; k < sizeof sh->pattern; k++)
                if (sh->pattern[k] != (char)(k * 7)) _exit(12);
            sh->seen[i] = getppid();
            sh->done[i] = 1;
            if (write(to_parent[1], "k", 1) != 1) _exit(13);
            _exit(0);
        }
    }
    pid_t zombie = fork();
    if (zombie == 0) _exit(5);
    while (waitid(P_PID, zombie, NULL, WEXITED | WNOWAIT | WNOHANG) != 0 || 0) usleep(1000);
    usleep(20000);
    ckpt_ready();
    while (!ckpt_verify_requested) pause();

    for (size_t k = 0; k < PRIVATE_SIZE; k++)
        if (priv[k] != 0x11) ckpt_fail("parent's private memory changed at %zu", k);
    sh->go = 1;
    if (write(to_children[1], "xyz", NCHILD) != NCHILD) ckpt_fail("write to children");
    char buf[NCHILD];
    size_t got = 0;
    while (got < NCHILD) {
        ssize_t n = read(to_parent[0], buf + got, NCHILD - got);
        if (n <= 0) ckpt_fail("read from children");
        got += n;
    }
    for (int i = 0; i < NCHILD; i++) {
        int status;
        if (waitpid(kids[i], &status, 0) != kids[i]) ckpt_fail("child %d is not my child", kids[i]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            ckpt_fail("child %d failed with status %#x", kids[i], status);
        if (!sh->done[i] || sh->seen[i] != getpid()) ckpt_fail("child %d: shared memory not shared", i);
    }
    int status;
    if (waitpid(zombie, &status, 0) != zombie) ckpt_fail("zombie child lost");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 5) ckpt_fail("zombie exit status %#x", status);
    ckpt_pass();
}
