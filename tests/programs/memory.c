/* Memory layouts across a checkpoint (run in its own scratch directory):
 *  - a 256 MiB malloc'd block filled with a position-dependent pattern;
 *  - a private writable mapping of private.dat (64 pages, all read, so all present) with two
 *    copy-on-write pages modified; the file itself must stay unmodified;
 *  - a MAP_SHARED mapping of shared.dat whose writes (before and after restore) reach the file;
 *  - a sparse 64 MiB anonymous region with two touched pages;
 *  - PROT_NONE guard pages around a data page, and a PROT_NONE page that holds data;
 *  - a read-only (mprotect'ed) region with data, which must still fault on write;
 *  - brk: the break is where it was, and malloc/sbrk still grow the heap after restore.
 * Addresses the test checks in the image are published as "info NAME 0xADDR".
 */
#include "ckpt_test.h"
#include <fcntl.h>
#include <setjmp.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define BIG (256UL << 20)
#define SPARSE (64UL << 20)
#define FILE_PAGES 64

static long page;
static sigjmp_buf probe_env;
static volatile sig_atomic_t probing;

static void on_segv(int sig) {
    (void)sig;
    if (probing) siglongjmp(probe_env, 1);
    _exit(99);
}

/* 1 if writing (or reading) the byte at p faults. */
static int faults(volatile char *p, int write) {
    probing = 1;
    if (sigsetjmp(probe_env, 1)) {
        probing = 0;
        return 1;
    }
    if (write) *p = *p;
    else (void)*p;
    probing = 0;
    return 0;
}

static uint64_t pattern(uint64_t i) { return (i * 0x9e3779b97f4a7c15ULL) ^ (i >> 7) ^ 0xc0ffee; }

static char file_byte(size_t off) { return (char)('A' + (off / 4096 * 7 + off) % 26); }

static void write_file(const char *path, size_t size) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) ckpt_fail("create %s", path);
    char *buf = malloc(size);
    for (size_t i = 0; i < size; i++) buf[i] = file_byte(i);
    if (write(fd, buf, size) != (ssize_t)size) ckpt_fail("write %s", path);
    free(buf);
    close(fd);
}

static void *map_file(const char *path, size_t size, int flags) {
    int fd = open(path, O_RDWR);
    if (fd < 0) ckpt_fail("open %s", path);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (p == MAP_FAILED) ckpt_fail("mmap %s", path);
    close(fd);
    return p;
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    page = sysconf(_SC_PAGESIZE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);

    /* 256 MiB heap block */
    uint64_t *big = malloc(BIG);
    if (!big) ckpt_fail("malloc 256 MiB");
    for (uint64_t i = 0; i < BIG / 8; i++) big[i] = pattern(i);

    /* private file mapping: everything read, two pages copied on write */
    size_t fsize = FILE_PAGES * page;
    write_file("private.dat", fsize);
    char *priv = map_file("private.dat", fsize, MAP_PRIVATE);
    volatile char sink = 0;
    for (size_t off = 0; off < fsize; off += page) sink += priv[off];
    memset(priv + 3 * page + 100, 'x', 50);
    memset(priv + 40 * page, 'y', page);

    /* shared file mapping */
    write_file("shared.dat", 4 * page);
    char *shared = map_file("shared.dat", 4 * page, MAP_SHARED);
    memcpy(shared + page + 10, "written before checkpoint", 25);

    /* sparse region, two pages touched (no transparent huge pages, so pages stay pages) */
    char *sparse = mmap(NULL, SPARSE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (sparse == MAP_FAILED) ckpt_fail("mmap sparse");
    madvise(sparse, SPARSE, MADV_NOHUGEPAGE);
    strcpy(sparse + 5 * page + 17, "first touched page");
    strcpy(sparse + SPARSE - page, "last touched page");
    sink += sparse[1000 * page]; /* a read maps the zero page: nothing to save */

    /* guard pages: ---p | rw-p data | ---p, and a PROT_NONE page holding data */
    char *guarded = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (guarded == MAP_FAILED) ckpt_fail("mmap guarded");
    strcpy(guarded + page, "between the guards");
    strcpy(guarded + 3 * page, "hidden behind PROT_NONE");
    if (mprotect(guarded, page, PROT_NONE) || mprotect(guarded + 2 * page, 2 * page, PROT_NONE))
        ckpt_fail("mprotect guards");

    /* read-only region with data */
    char *ro = mmap(NULL, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ro == MAP_FAILED) ckpt_fail("mmap ro");
    for (size_t i = 0; i < 3 * page; i++) ro[i] = (char)(i * 13);
    if (mprotect(ro, 3 * page, PROT_READ)) ckpt_fail("mprotect ro");

    /* brk */
    char *small = malloc(1000);
    strcpy(small, "small heap chunk");
    void *brk_before = (void *)syscall(SYS_brk, 0);

    ckpt_status("info sparse %p", (void *)sparse);
    ckpt_status("info guarded %p", (void *)guarded);
    ckpt_ready();
    while (!ckpt_verify_requested) pause();

    for (uint64_t i = 0; i < BIG / 8; i++)
        if (big[i] != pattern(i)) ckpt_fail("256 MiB block differs at word %llu", (unsigned long long)i);

    for (size_t off = 0; off < fsize; off++) {
        char want = file_byte(off);
        if (off >= 3 * page + 100 && off < 3 * page + 150) want = 'x';
        if (off >= 40 * (size_t)page && off < 41 * (size_t)page) want = 'y';
        if (priv[off] != want) ckpt_fail("private mapping differs at offset %zu", off);
    }
    int fd = open("private.dat", O_RDONLY);
    char buf[8192];
    if (pread(fd, buf, page, 3 * page) != page || buf[100] != file_byte(3 * page + 100))
        ckpt_fail("private mapping's copy-on-write page reached the file");
    close(fd);

    if (memcmp(shared + page + 10, "written before checkpoint", 25)) ckpt_fail("shared mapping lost data");
    memcpy(shared + 2 * page, "written after restore", 21);
    if (msync(shared, 4 * page, MS_SYNC)) ckpt_fail("msync");
    fd = open("shared.dat", O_RDONLY);
    if (pread(fd, buf, 25, page + 10) != 25 || memcmp(buf, "written before checkpoint", 25))
        ckpt_fail("shared.dat lacks the write made before the checkpoint");
    if (pread(fd, buf, 21, 2 * page) != 21 || memcmp(buf, "written after restore", 21))
        ckpt_fail("a write through the restored shared mapping did not reach shared.dat");
    close(fd);

    if (strcmp(sparse + 5 * page + 17, "first touched page") || strcmp(sparse + SPARSE - page, "last touched page"))
        ckpt_fail("sparse region lost its touched pages");
    for (size_t off = 0; off < SPARSE; off += page / 2)
        if (off / page != 5 && off / page != SPARSE / page - 1 && sparse[off])
            ckpt_fail("sparse region has data at offset %zu", off);

    if (strcmp(guarded + page, "between the guards")) ckpt_fail("guarded page lost its data");
    if (!faults(guarded, 0) || !faults(guarded + 2 * page, 0) || !faults(guarded + 3 * page, 0))
        ckpt_fail("a PROT_NONE guard page is accessible");
    if (mprotect(guarded + 3 * page, page, PROT_READ)) ckpt_fail("mprotect hidden page");
    if (strcmp(guarded + 3 * page, "hidden behind PROT_NONE")) ckpt_fail("PROT_NONE page lost its data");

    for (size_t i = 0; i < 3 * page; i++)
        if (ro[i] != (char)(i * 13)) ckpt_fail("read-only region differs at %zu", i);
    if (!faults(ro + page, 1)) ckpt_fail("read-only region became writable");

    if (strcmp(small, "small heap chunk")) ckpt_fail("small heap chunk lost");
    void *brk_now = (void *)syscall(SYS_brk, 0);
    if (brk_now != brk_before) ckpt_fail("brk is %p, was %p", brk_now, brk_before);
    char *grown = sbrk(16 * page);
    if (grown == (void *)-1) ckpt_fail("sbrk failed after restore");
    if (grown != brk_before) ckpt_fail("sbrk grew from %p, break was %p", (void *)grown, brk_before);
    memset(grown, 0x5a, 16 * page);
    if ((char *)syscall(SYS_brk, 0) != grown + 16 * page) ckpt_fail("brk did not move");
    if (sbrk(-8 * page) == (void *)-1) ckpt_fail("sbrk shrink failed");
    for (int i = 0; i < 2000; i++) {
        char *p = malloc(1000 + i);
        if (!p) ckpt_fail("malloc after restore");
        memset(p, i, 1000 + i);
    }
    char *more = malloc(32UL << 20);
    if (!more) ckpt_fail("large malloc after restore");
    memset(more, 1, 32UL << 20);
    ckpt_pass();
}
