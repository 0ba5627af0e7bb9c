/* Memory restored lazily (restore --lazy), checked while it is still being copied in.
 * Unlike the other programs it checks itself as soon as it runs again, not on SIGUSR1: it
 * waits for the file STATUS.go (the test creates it after the dump), then at once
 *  - forks a child that checks its copy of everything (and forks a grandchild checking part
 *    of it again, and one that execs /bin/true),
 *  - lets 4 threads check quarters of the big region concurrently,
 *  - drops a region with MADV_DONTNEED (it must read zeros: not the snapshot),
 *  - moves a region with mremap (its content must move along),
 *  - read()s a file into a region not touched yet (the kernel faults on our behalf),
 * then checks the big region whole and reports PASS or FAIL.
 * The big region holds a zero page every 16 pages (left out of the image).
 */
#include "ckpt_test.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define BIG (256UL << 20)
#define SMALL (8UL << 20)
#define THREADS 4

static long page;
static char *big, *drop, *move, *readbuf;
static pthread_barrier_t go_barrier;
static char thread_error[THREADS][160];

static uint64_t word(uint64_t seed, size_t w) { return seed * 0x9e3779b97f4a7c15ULL + w + 1; }

/* page i of a region tagged `tag` holds zeros when i % 16 == 15, else a pattern */
static void fill(char *region, size_t size, uint64_t tag) {
    for (size_t i = 0; i < size / page; i++) {
        uint64_t *p = (uint64_t *)(region + i * page);
        if (i % 16 == 15) continue;
        for (size_t w = 0; w < (size_t)page / 8; w++) p[w] = word(tag + i, w);
    }
}

/* first bad page of [from, to) pages of the region, or -1 */
static long check(const char *region, size_t from, size_t to, uint64_t tag) {
    for (size_t i = from; i < to; i++) {
        const uint64_t *p = (const uint64_t *)(region + i * page);
        for (size_t w = 0; w < (size_t)page / 8; w++)
            if (p[w] != (i % 16 == 15 ? 0 : word(tag + i, w))) return (long)i;
    }
    return -1;
}

static void *checker(void *arg) {
    long t = (long)arg;
    size_t pages = BIG / page / THREADS;
    pthread_barrier_wait(&go_barrier);
    long bad = check(big, t * pages, (t + 1) * pages, 1);
    if (bad >= 0) snprintf(thread_error[t], sizeof thread_error[t], "thread %ld: big page %ld", t, bad);
    return NULL;
}

static char *map(size_t size) {
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(2); }
    return p;
}

static int child_checks(void) {
    /* a grandchild (forked by a process the restorer did not create) checks part again */
    pid_t grandchild = fork();
    if (grandchild == 0) _exit(check(big, 0, BIG / page / 8, 1) >= 0 ? 11 : 0);
    pid_t exec_child = fork();
    if (exec_child == 0) { execl("/bin/true", "true", (char *)NULL); _exit(12); }
    if (check(big, 0, BIG / page, 1) >= 0) return 13;
    if (check(drop, 0, SMALL / page, 2) >= 0) return 14; /* the parent's DONTNEED is not ours */
    if (check(readbuf, 0, SMALL / page, 4) >= 0) return 15; /* nor its read() */
    int status;
    if (waitpid(grandchild, &status, 0) != grandchild || status != 0) return 16;
    if (waitpid(exec_child, &status, 0) != exec_child || status != 0) return 17;
    return 0;
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    page = sysconf(_SC_PAGESIZE);
    char go[4096], data[4096];
    snprintf(go, sizeof go, "%s.go", ckpt_status_path);
    snprintf(data, sizeof data, "%s.data", ckpt_status_path);

    big = map(BIG), drop = map(SMALL), move = map(SMALL), readbuf = map(SMALL);
    fill(big, BIG, 1), fill(drop, SMALL, 2), fill(move, SMALL, 3), fill(readbuf, SMALL, 4);
    /* the file read() later: another pattern than readbuf's */
    char *file_content = map(SMALL);
    fill(file_content, SMALL, 5);
    int fd = open(data, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, file_content, SMALL) != (ssize_t)SMALL) ckpt_fail("write %s", data);
    munmap(file_content, SMALL);
    /* where `move` goes: reserved now, so the address is known */
    char *target = mmap(NULL, SMALL, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    pthread_barrier_init(&go_barrier, NULL, THREADS + 1);
    pthread_t threads[THREADS];
    for (long t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, checker, (void *)t);
    ckpt_ready();

    while (access(go, F_OK) != 0) usleep(1000);

    /* restored: everything below runs while memory is still coming in */
    pid_t child = fork();
    if (child < 0) ckpt_fail("fork");
    if (child == 0) _exit(child_checks());
    pthread_barrier_wait(&go_barrier);

    if (madvise(drop, SMALL, MADV_DONTNEED) != 0) ckpt_fail("madvise");
    for (size_t i = 0; i < SMALL; i += 8)
        if (*(uint64_t *)(drop + i) != 0) ckpt_fail("dropped memory reads data at +%zu", i);

    char *moved = mremap(move, SMALL, SMALL, MREMAP_MAYMOVE | MREMAP_FIXED, target);
    if (moved != target) ckpt_fail("mremap");
    long bad = check(moved, 0, SMALL / page, 3);
    if (bad >= 0) ckpt_fail("moved region page %ld", bad);
    unsigned char vec;
    if (mincore(move, page, &vec) == 0) ckpt_fail("old place of the moved region still mapped");

    if (lseek(fd, 0, SEEK_SET) != 0) ckpt_fail("lseek");
    size_t got = 0;
    while (got < SMALL) {
        ssize_t n = read(fd, readbuf + got, SMALL - got);
        if (n <= 0) ckpt_fail("read: %s", n < 0 ? strerror(errno) : "end of file");
        got += n;
    }
    bad = check(readbuf, 0, SMALL / page, 5);
    if (bad >= 0) ckpt_fail("read() buffer page %ld", bad);

    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        if (thread_error[t][0]) ckpt_fail("%s", thread_error[t]);
    }
    bad = check(big, 0, BIG / page, 1);
    if (bad >= 0) ckpt_fail("big page %ld", bad);
    int status;
    if (waitpid(child, &status, 0) != child) ckpt_fail("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        ckpt_fail("child: status %#x (exit code %d)", status, WEXITSTATUS(status));
    ckpt_pass();
}
