/* POSIX shared memory (shm_open + mmap, and a memfd) and a SysV segment (one attached and
 * kept, one attached and already marked for removal), with content written before the dump. */
#include "ckpt_test.h"
#include <fcntl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>

#define SIZE (256 * 1024)

static int check(const unsigned char *p, int seed) {
    for (int i = 0; i < SIZE; i++)
        if (p[i] != (unsigned char)(i * seed)) return 0;
    return 1;
}

static void fill(unsigned char *p, int seed) {
    for (int i = 0; i < SIZE; i++) p[i] = (unsigned char)(i * seed);
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    char name[64];
    snprintf(name, sizeof name, "/ckpt-test-%d", getpid());
    int pfd = shm_open(name, O_CREAT | O_RDWR | O_EXCL, 0600);
    if (pfd < 0 || ftruncate(pfd, SIZE)) ckpt_fail("shm_open");
    unsigned char *posix = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, pfd, 0);
    fill(posix, 3);
    int mfd = memfd_create("ckpt-memfd", MFD_CLOEXEC);
    if (mfd < 0 || ftruncate(mfd, SIZE)) ckpt_fail("memfd");
    unsigned char *memfd = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    fill(memfd, 5);
    int kept = shmget(IPC_PRIVATE, SIZE, IPC_CREAT | 0600);
    int doomed = shmget(IPC_PRIVATE, SIZE, IPC_CREAT | 0600);
    unsigned char *sysv = shmat(kept, NULL, 0);
    unsigned char *sysv2 = shmat(doomed, NULL, SHM_RDONLY);
    if (kept < 0 || doomed < 0 || sysv == (void *)-1 || sysv2 == (void *)-1) ckpt_fail("shmget/shmat");
    fill(sysv, 7);
    unsigned char *writer = shmat(doomed, NULL, 0);
    fill(writer, 11);
    shmdt(writer);
    shmctl(doomed, IPC_RMID, NULL);
    ckpt_ready();
    while (!ckpt_verify_requested) pause();

    if (!check(posix, 3)) ckpt_fail("POSIX shm content");
    if (!check(memfd, 5)) ckpt_fail("memfd mapping content");
    unsigned char buf[16];
    if (pread(mfd, buf, 16, 0) != 16 || buf[1] != 5) ckpt_fail("memfd fd and mapping differ");
    if (!check(sysv, 7)) ckpt_fail("SysV segment content");
    if (!check(sysv2, 11)) ckpt_fail("removed SysV segment content");
    struct shmid_ds ds;
    if (shmctl(kept, IPC_STAT, &ds) || ds.shm_segsz != SIZE) ckpt_fail("SysV segment id lost");
    /* writes through the mapping still reach the objects */
    posix[0] = 0xAB;
    unsigned char b;
    if (pread(pfd, &b, 1, 0) != 1 || b != 0xAB) ckpt_fail("POSIX shm mapping detached from its file");
    memfd[0] = 0xCD;
    if (pread(mfd, &b, 1, 0) != 1 || b != 0xCD) ckpt_fail("memfd mapping detached from its fd");
    shm_unlink(name);
    shmctl(kept, IPC_RMID, NULL);
    ckpt_pass();
}
