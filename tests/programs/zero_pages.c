/* Resident all-zero pages across a checkpoint (the image leaves them out where that is safe):
 *  - a 64 MiB anonymous region: its first half written with zeros, its second half a mix of
 *    pages of data, zero pages, and pages that are zero but for one byte (last, or middle);
 *  - a private file mapping with one copy-on-write page written to zeros (it must come back
 *    zero, not with the file's content) and one with data;
 *  - a shared anonymous mapping with a page of data and one zeroed after holding data;
 *  - "churn" pages rewritten all the time, each alternately with data and with zeros, so
 *    pages change between zero and data while pre-copy runs; each is checked before it is
 *    rewritten, so a page restored wrong is noticed even though it is rewritten soon after;
 *  - on SIGUSR2: zero some data pages and put data into some zero pages (for an incremental
 *    image taken after it), then report "changed".
 * Addresses the test checks in the image are published as "info NAME 0xADDR".
 */
#include "ckpt_test.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>

#define REGION (64UL << 20)
#define FILE_PAGES 8
#define CHURN_PAGES 63 /* odd: each visit of a page flips it between data and zeros */
#define CHANGED 100

static long page;
static size_t region_pages;
static volatile sig_atomic_t change_requested;
static volatile uint64_t churn_steps; /* steps completed */
static char *churn;
static int changed;
static char churn_error[128];

static void on_usr2(int sig) { (void)sig; change_requested = 1; }

static uint64_t word(uint64_t seed, size_t w) { return seed * 0x9e3779b97f4a7c15ULL + w + 1; }

static void fill(char *p, uint64_t seed) {
    for (size_t w = 0; w < (size_t)page / 8; w++) ((uint64_t *)p)[w] = word(seed, w);
}

static int filled_with(const char *p, uint64_t seed) {
    for (size_t w = 0; w < (size_t)page / 8; w++)
        if (((const uint64_t *)p)[w] != word(seed, w)) return 0;
    return 1;
}

static int zero_but(const char *p, long at, char value) {
    for (long i = 0; i < page; i++)
        if (p[i] != (i == at ? value : 0)) return 0;
    return 1;
}

/* What page i of the region holds: 'd' data, 'z' zeros, 'l' zero but the last byte, 'm' zero
 * but a byte in the middle. The first CHANGED data pages become zero and the first CHANGED
 * zero pages get data when a change was made. */
static char region_kind(size_t i) {
    if (i < region_pages / 2) return changed && i < CHANGED ? 'd' : 'z';
    switch (i % 8) {
    case 0: return changed && i < region_pages / 2 + 8 * CHANGED ? 'z' : 'd';
    case 3: return 'l';
    case 5: return 'm';
    default: return 'z';
    }
}

/* Whether churn page j holds what the last of the first `steps` steps wrote to it. */
static int churn_page_ok(size_t j, uint64_t steps) {
    const char *p = churn + j * page;
    if (steps <= j) return filled_with(p, 5000 + j);
    uint64_t last = j + (steps - 1 - j) / CHURN_PAGES * CHURN_PAGES;
    return last % 2 ? zero_but(p, -1, 0) : filled_with(p, last);
}

static char file_byte(size_t off) { return (char)('A' + (off / 4096 * 3 + off) % 26); }

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    page = sysconf(_SC_PAGESIZE);
    region_pages = REGION / page;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);

    /* 4 KiB pages only, so that the counts the test expects are exact */
    char *region = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) ckpt_fail("mmap region");
    madvise(region, REGION, MADV_NOHUGEPAGE);
    for (size_t i = 0; i < region_pages; i++) {
        char *p = region + i * page;
        fill(p, i); /* data first: every page is resident, then most become zero again */
        switch (region_kind(i)) {
        case 'z': memset(p, 0, page); break;
        case 'l': memset(p, 0, page); p[page - 1] = 7; break;
        case 'm': memset(p, 0, page); p[page / 2 + 3] = 9; break;
        }
    }

    int fd = open("private.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) ckpt_fail("create private.dat");
    for (size_t off = 0; off < FILE_PAGES * (size_t)page; off++)
        if (write(fd, (char[]){file_byte(off)}, 1) != 1) ckpt_fail("write private.dat");
    char *priv = mmap(NULL, FILE_PAGES * page, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (priv == MAP_FAILED) ckpt_fail("mmap private.dat");
    close(fd);
    memset(priv + 2 * page, 0, page);
    memset(priv + 5 * page + 10, 'q', 20);

    char *shared = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) ckpt_fail("mmap shared");
    fill(shared, 1001);
    fill(shared + page, 1002);
    memset(shared + page, 0, page);

    churn = mmap(NULL, CHURN_PAGES * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (churn == MAP_FAILED) ckpt_fail("mmap churn");
    madvise(churn, CHURN_PAGES * page, MADV_NOHUGEPAGE);
    for (size_t j = 0; j < CHURN_PAGES; j++) fill(churn + j * page, 5000 + j);

    ckpt_status("info region %p", (void *)region);
    ckpt_status("info private %p", (void *)priv);
    ckpt_ready();
    while (!ckpt_verify_requested) {
        uint64_t k = churn_steps;
        char *p = churn + k % CHURN_PAGES * page;
        if (!churn_error[0] && !churn_page_ok(k % CHURN_PAGES, k))
            snprintf(churn_error, sizeof churn_error, "churn page %llu differs before step %llu",
                     (unsigned long long)(k % CHURN_PAGES), (unsigned long long)k);
        if (k % 2) memset(p, 0, page);
        else fill(p, k);
        churn_steps = k + 1;
        if (change_requested && !changed) {
            for (size_t n = 0; n < CHANGED; n++) {
                memset(region + (region_pages / 2 + 8 * n) * page, 0, page);
                fill(region + n * page, n);
            }
            changed = 1;
            ckpt_status("changed");
        }
        usleep(200);
    }

    for (size_t i = 0; i < region_pages; i++) {
        const char *p = region + i * page;
        char kind = region_kind(i);
        int ok = kind == 'd' ? filled_with(p, i) : kind == 'z' ? zero_but(p, -1, 0)
            : kind == 'l' ? zero_but(p, page - 1, 7) : zero_but(p, page / 2 + 3, 9);
        if (!ok) ckpt_fail("region page %zu (kind %c) differs", i, kind);
    }
    for (size_t off = 0; off < FILE_PAGES * (size_t)page; off++) {
        char want = file_byte(off);
        if (off / page == 2) want = 0;
        if (off >= 5 * (size_t)page + 10 && off < 5 * (size_t)page + 30) want = 'q';
        if (priv[off] != want) ckpt_fail("private file mapping differs at offset %zu", off);
    }
    if (!filled_with(shared, 1001) || !zero_but(shared + page, -1, 0))
        ckpt_fail("shared anonymous mapping differs");
    if (churn_error[0]) ckpt_fail("%s", churn_error);
    for (size_t j = 0; j < CHURN_PAGES; j++)
        if (!churn_page_ok(j, churn_steps))
            ckpt_fail("churn page %zu differs after %llu steps", j, (unsigned long long)churn_steps);
    /* pages left out of the image are ordinary writable memory */
    for (size_t i = 0; i < region_pages; i++) region[i * page + 11] = 1;
    for (size_t i = 0; i < region_pages; i++)
        if (region[i * page + 11] != 1) ckpt_fail("region page %zu did not keep a write", i);
    ckpt_pass();
}
