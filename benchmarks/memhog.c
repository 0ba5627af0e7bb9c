/* Benchmark subject: holds SIZE bytes of pseudo-random (incompressible) data in one anonymous
 * mapping, every page resident, until SIGUSR1; then re-checks its memory and reports.
 *
 *   memhog STATUS_FILE SIZE_BYTES [thp|nothp [WORKERS]]
 *
 * With WORKERS > 0 the data is held by that many forked children, SIZE/WORKERS each (a
 * kernel with worker processes); the parent holds none, says ready once every child has
 * filled its share, and on SIGUSR1 has each child re-check its share: PASS only if all do.
 *
 * Status lines (appended to STATUS_FILE):
 *   ready <checksum> <fill_ms>          after filling and checksumming
 *   PASS <checksum> <check_ms>          memory still has the checksum it had at "ready"
 *   FAIL <why>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *status_path;
static volatile sig_atomic_t verify_requested;
static uint64_t expected;  /* lives in our memory too: restored along with the data */

static void on_usr1(int sig) { (void)sig; verify_requested = 1; }

static void status(const char *fmt, ...) {
    FILE *f = fopen(status_path, "a");
    if (!f) _exit(3);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Four independent lanes so the hash runs near memory speed; any flipped, lost or moved
 * word changes the result. */
static uint64_t checksum(const uint64_t *p, size_t words) {
    const uint64_t k = 0x9E3779B97F4A7C15ull;
    uint64_t h[4] = {1, 2, 3, 4};
    size_t i = 0;
    for (; i + 4 <= words; i += 4)
        for (int l = 0; l < 4; l++) {
            uint64_t x = (h[l] ^ p[i + l]) * k;
            h[l] = x ^ (x >> 29) ^ (i + l);
        }
    for (; i < words; i++) h[0] = (h[0] ^ p[i]) * k;
    uint64_t r = 0;
    for (int l = 0; l < 4; l++) r = (r ^ h[l]) * k + l;
    return r ^ (r >> 31);
}

/* Fill `size` bytes with pseudo-random data; their checksum. */
static uint64_t *fill(size_t size, int thp, uint64_t *sum) {
    uint64_t *data = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (data == MAP_FAILED) { status("FAIL mmap: %s", strerror(errno)); exit(1); }
    if (thp) madvise(data, size, MADV_HUGEPAGE);
    uint64_t s = 0x243F6A8885A308D3ull ^ ((uint64_t)getpid() << 32) ^ (uint64_t)now_ms();
    size_t words = size / 8;
    for (size_t i = 0; i < words; i++) {  /* xorshift64*: fills every page, incompressible */
        s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
        data[i] = s * 0x2545F4914F6CDD1Dull;
    }
    *sum = checksum(data, words);
    return data;
}

static void wait_for_usr1(void) {
    while (!verify_requested) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* A worker: fill its share, tell the parent its checksum, re-check on SIGUSR1 (exit 0: same). */
static int worker(size_t size, int thp, int ready_fd) {
    uint64_t sum;
    uint64_t *data = fill(size, thp, &sum);
    if (write(ready_fd, &sum, sizeof sum) != sizeof sum) return 3;
    wait_for_usr1();
    uint64_t got = checksum(data, size / 8);
    if (got != sum) {
        status("FAIL worker %d checksum %016" PRIx64 " != %016" PRIx64, getpid(), got, sum);
        return 1;
    }
    return 0;
}

static int with_workers(size_t size, int thp, int workers) {
    int ready[2];
    pid_t pids[64];
    if (workers > 64 || pipe(ready) != 0) { status("FAIL workers"); return 1; }
    double t0 = now_ms();
    for (int i = 0; i < workers; i++) {
        pids[i] = fork();
        if (pids[i] == 0) { close(ready[0]); _exit(worker(size / workers & ~(size_t)7, thp, ready[1])); }
    }
    close(ready[1]);
    expected = 0;
    for (int i = 0; i < workers; i++) {
        uint64_t sum;
        if (read(ready[0], &sum, sizeof sum) != sizeof sum) { status("FAIL a worker died"); return 1; }
        expected ^= sum;
    }
    status("ready %016" PRIx64 " %.0f", expected, now_ms() - t0);
    wait_for_usr1();
    t0 = now_ms();
    int failed = 0;
    for (int i = 0; i < workers; i++) {
        int st;
        kill(pids[i], SIGUSR1);
        if (waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0) failed = 1;
    }
    if (failed) { status("FAIL a worker's memory changed"); return 1; }
    status("PASS %016" PRIx64 " %.0f", expected, now_ms() - t0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s STATUS_FILE SIZE_BYTES [thp|nothp [WORKERS]]\n", argv[0]); return 2; }
    status_path = argv[1];
    size_t size = strtoull(argv[2], NULL, 0) & ~(size_t)7;
    int thp = argc > 3 && strcmp(argv[3], "thp") == 0;
    int workers = argc > 4 ? atoi(argv[4]) : 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    if (workers > 0) return with_workers(size, thp, workers);

    double t0 = now_ms();
    uint64_t *data = fill(size, thp, &expected);
    size_t words = size / 8;
    status("ready %016" PRIx64 " %.0f", expected, now_ms() - t0);

    wait_for_usr1();
    t0 = now_ms();
    uint64_t got = checksum(data, words);
    if (got != expected) {
        status("FAIL checksum %016" PRIx64 " != %016" PRIx64, got, expected);
        return 1;
    }
    status("PASS %016" PRIx64 " %.0f", got, now_ms() - t0);
    return 0;
}
