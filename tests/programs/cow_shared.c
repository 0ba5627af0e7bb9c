/* A parent, its child and its grandchild still sharing most of a 16 MiB region copy-on-write:
 * written before each fork and never since. Around that, pages each wrote or dropped after
 * the fork. A round of checks runs before the checkpoint (so the setup itself is proven) and
 * after the restore: each process checks its content, and that the pages it never wrote are
 * on the very same page frames as its parent's (/proc/self/pagemap; root sees frame numbers).
 *
 * Pages of the region: [0, 16) the child wrote; [16, 32) the parent wrote after the fork;
 * [32, 40) the child dropped (MADV_DONTNEED); [40, LATE) nobody wrote after the forks;
 * [LATE, NPAGES) untouched before the fork, the parent wrote them after it.
 * Then a private mapping of a file (FPAGES pages, in the working directory), whose pages
 * written before the fork are shared copy-on-write too: [0, 8) the child wrote; [8, 16) the
 * parent wrote after the fork; [16, 24) the child dropped (it sees the file again); [24, 48)
 * nobody wrote after the forks; [48, 64) never written, but [56, 64) by the parent after.
 * With the argument "copies", the frames are not compared after the restore (a restore that
 * is documented to bring the pages back as private copies: only their content must hold). */
#include "ckpt_test.h"
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define NPAGES 4096
#define LATE (NPAGES - 64)
#define FPAGES 64
#define ALL (NPAGES + FPAGES)  /* pages checked: the anonymous region's, then the file's */
#define PM_PRESENT (1ULL << 63)
#define PM_FRAME ((1ULL << 55) - 1)

enum who { PARENT, CHILD, GRANDCHILD };

struct report {
    uint64_t frames[ALL];
    char why[256];
};

static long page;
static unsigned char *region, *file_region;
static struct report mine, theirs;
static char check_frames = 1;  /* this round compares frames (each request says whether) */

static unsigned char original(size_t i) { return (unsigned char)(i % 251 + 1); }

static unsigned char in_file(size_t i) { return (unsigned char)(0x30 + i % 16); }
static unsigned char before_fork(size_t i) { return (unsigned char)(0x70 + i % 7); }

static unsigned char expected_in_file_region(enum who who, size_t i) {
    if (i < 8) return who == PARENT ? before_fork(i) : 0xC2;
    if (i < 16) return who == PARENT ? 0xA2 : before_fork(i);
    if (i < 24) return who == PARENT ? before_fork(i) : in_file(i);
    if (i < 48) return before_fork(i);
    if (i < 56) return in_file(i);
    return who == PARENT ? 0xA2 : in_file(i);
}

static unsigned char expected(enum who who, size_t i) {
    if (i >= NPAGES) return expected_in_file_region(who, i - NPAGES);
    if (i < 16) return who == PARENT ? original(i) : 0xC1;
    if (i < 32) return who == PARENT ? 0xA1 : original(i);
    if (i < 40) return who == PARENT ? original(i) : 0;
    if (i < LATE) return original(i);
    return who == PARENT ? 0xA1 : 0;
}

/* Whether page i must be on the same frame as the parent's (for the child) or the child's
 * (for the grandchild). */
static int shared_with_parent(enum who who, size_t i) {
    if (i >= NPAGES) {
        i -= NPAGES;
        return (i >= 24 && i < 48) || (who == GRANDCHILD && i < 16);
    }
    if (who == CHILD) return i >= 40 && i < LATE;
    return i < 32 || (i >= 40 && i < LATE);
}

static unsigned char *page_at(size_t i) {
    return i < NPAGES ? region + i * page : file_region + (i - NPAGES) * page;
}

static void fill(size_t from, size_t to, int value) {
    for (size_t i = from; i < to; i++)
        memset(page_at(i), value < 0 ? original(i) : value, page);
}

static void fill_file_region(size_t from, size_t to, int value) {
    for (size_t i = from; i < to; i++)
        memset(file_region + i * page, value < 0 ? before_fork(i) : value, page);
}

/* Read or write all of `buf`; -1 when the other end is gone. */
static int io_all(int fd, void *buf, size_t size, int writing) {
    char *p = buf;
    while (size) {
        ssize_t n = writing ? write(fd, p, size) : read(fd, p, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        size -= n;
    }
    return 0;
}

/* Fill `mine`: this process's frames for the region and what is wrong with its content. */
static void look(enum who who) {
    mine.why[0] = 0;
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0) { snprintf(mine.why, sizeof mine.why, "open pagemap: %s", strerror(errno)); return; }
    off_t at = (off_t)((uintptr_t)region / page * sizeof(uint64_t));
    off_t file_at = (off_t)((uintptr_t)file_region / page * sizeof(uint64_t));
    if (pread(fd, mine.frames, NPAGES * 8, at) != NPAGES * 8
            || pread(fd, mine.frames + NPAGES, FPAGES * 8, file_at) != FPAGES * 8)
        snprintf(mine.why, sizeof mine.why, "read pagemap: %s", strerror(errno));
    close(fd);
    for (size_t i = 0; i < ALL; i++)
        mine.frames[i] = mine.frames[i] & PM_PRESENT ? mine.frames[i] & PM_FRAME : 0;
    for (size_t i = 0; i < ALL && !mine.why[0]; i++)
        for (long k = 0; k < page; k++)
            if (page_at(i)[k] != expected(who, i)) {
                snprintf(mine.why, sizeof mine.why, "process %d: page %zu holds %#x, not %#x",
                         who, i, page_at(i)[k], expected(who, i));
                break;
            }
}

/* `theirs` came from a child of this process: compare it with `mine`. */
static void compare(enum who child) {
    if (theirs.why[0]) {
        memcpy(mine.why, theirs.why, sizeof mine.why);
        return;
    }
    for (size_t i = 0; i < ALL && !mine.why[0] && check_frames; i++) {
        if (!shared_with_parent(child, i)) continue;
        if (!mine.frames[i] || !theirs.frames[i])
            snprintf(mine.why, sizeof mine.why, "process %d: page %zu has no frame number "
                     "(not root, or not present)", child, i);
        else if (mine.frames[i] != theirs.frames[i])
            snprintf(mine.why, sizeof mine.why, "process %d: page %zu is not shared with its "
                     "parent (frames %#llx and %#llx)", child, i,
                     (unsigned long long)theirs.frames[i], (unsigned long long)mine.frames[i]);
    }
}

/* A child's life: at each request from its parent, run a round (driving its own child's
 * first, if any) and report; end when the parent is gone (the test is over). */
static void serve(enum who who, int requests, int reports, int child_requests, int child_reports) {
    for (;;) {
        if (io_all(requests, &check_frames, 1, 0)) _exit(0);
        if (child_requests >= 0 && (io_all(child_requests, &check_frames, 1, 1)
                                    || io_all(child_reports, &theirs, sizeof theirs, 0)))
            _exit(24);  /* the parent then reads no report, and fails */
        look(who);
        if (child_requests >= 0 && !mine.why[0]) compare(GRANDCHILD);
        if (io_all(reports, &mine, sizeof mine, 1)) _exit(0);
    }
}

static int requests[2], reports[2];

static const char *round_trip(void) {
    if (io_all(requests[1], &check_frames, 1, 1) || io_all(reports[0], &theirs, sizeof theirs, 0))
        return "the child is gone (or lost its own child)";
    look(PARENT);
    if (!mine.why[0]) compare(CHILD);
    return mine.why[0] ? mine.why : NULL;
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    page = sysconf(_SC_PAGESIZE);
    region = mmap(NULL, NPAGES * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) ckpt_fail("mmap");
    fill(0, LATE, -1);
    int file = open("cow_shared.data", O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (file < 0) ckpt_fail("open: %s", strerror(errno));
    for (size_t i = 0; i < FPAGES; i++) {
        memset(mine.why, in_file(i), sizeof mine.why);
        for (long k = 0; k < page; k += sizeof mine.why)
            if (write(file, mine.why, sizeof mine.why) != sizeof mine.why) ckpt_fail("write");
    }
    file_region = mmap(NULL, FPAGES * page, PROT_READ | PROT_WRITE, MAP_PRIVATE, file, 0);
    if (file_region == MAP_FAILED) ckpt_fail("mmap of the file");
    close(file);
    fill_file_region(0, 48, -1);
    if (pipe(requests) || pipe(reports)) ckpt_fail("pipe");
    pid_t child = fork();
    if (child < 0) ckpt_fail("fork");
    if (child == 0) {
        close(requests[1]);
        close(reports[0]);
        fill(0, 16, 0xC1);
        if (madvise(region + 32 * page, 8 * page, MADV_DONTNEED)) _exit(21);
        fill_file_region(0, 8, 0xC2);
        if (madvise(file_region + 16 * page, 8 * page, MADV_DONTNEED)) _exit(21);
        int down[2], up[2];
        if (pipe(down) || pipe(up)) _exit(22);
        pid_t grandchild = fork();
        if (grandchild < 0) _exit(23);
        if (grandchild == 0) {
            close(requests[0]);
            close(reports[1]);
            close(down[1]);
            close(up[0]);
            serve(GRANDCHILD, down[0], up[1], -1, -1);
        }
        close(down[0]);
        close(up[1]);
        serve(CHILD, requests[0], reports[1], down[1], up[0]);
    }
    close(requests[0]);
    close(reports[1]);
    fill(16, 32, 0xA1);
    fill(LATE, NPAGES, 0xA1);
    fill_file_region(8, 16, 0xA2);
    fill_file_region(56, 64, 0xA2);
    const char *why = round_trip();
    if (why) ckpt_fail("before the checkpoint: %s", why);
    ckpt_ready();
    while (!ckpt_verify_requested) pause();
    check_frames = !(argc > 2 && strcmp(argv[1], "copies") == 0);
    why = round_trip();
    if (why) ckpt_fail("%s", why);
    ckpt_pass();
}
