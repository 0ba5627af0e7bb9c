/* A file unlinked while open, with holes at its head, in the middle and at its tail (as
 * zdtm's ghost_holes00-02). After restore its content and its holes must be the same. */
#include "ckpt_test.h"
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sys/stat.h>
#include <time.h>

#define BLOCK 4096
/* hole, data, hole, data, hole */
static const off_t data_at[] = {1 * BLOCK, 3 * BLOCK};
#define SIZE (5 * BLOCK)

static void fill(char *buf, int seed) {
    for (int i = 0; i < BLOCK; i++) buf[i] = (char)(i * 7 + seed);
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    char here[PATH_MAX], path[PATH_MAX + 16], buf[BLOCK], want[BLOCK];
    snprintf(here, sizeof here, "%s", ckpt_status_path);
    snprintf(path, sizeof path, "%s/holes", dirname(here));
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || unlink(path)) ckpt_fail("open/unlink %s: %m", path);
    for (int i = 0; i < 2; i++) {
        fill(buf, i + 1);
        if (pwrite(fd, buf, BLOCK, data_at[i]) != BLOCK) ckpt_fail("pwrite: %m");
    }
    if (ftruncate(fd, SIZE)) ckpt_fail("ftruncate: %m");
    if (lseek(fd, 0, SEEK_HOLE) != 0 || lseek(fd, data_at[0], SEEK_HOLE) != data_at[0] + BLOCK)
        ckpt_fail("this file system keeps no holes");
    ckpt_ready();
    while (!ckpt_verify_requested) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    struct stat st;
    if (fstat(fd, &st) || st.st_size != SIZE) ckpt_fail("size %ld, expected %d", (long)st.st_size, SIZE);
    for (int i = 0; i < 2; i++) {
        fill(want, i + 1);
        if (pread(fd, buf, BLOCK, data_at[i]) != BLOCK || memcmp(buf, want, BLOCK))
            ckpt_fail("data block %d differs", i);
    }
    off_t head = lseek(fd, 0, SEEK_HOLE), mid = lseek(fd, data_at[0], SEEK_HOLE);
    off_t tail = lseek(fd, data_at[1], SEEK_HOLE), first = lseek(fd, 0, SEEK_DATA);
    if (head != 0 || first != data_at[0]) ckpt_fail("head hole lost (hole at %ld, data at %ld)", (long)head, (long)first);
    if (mid != data_at[0] + BLOCK) ckpt_fail("middle hole lost (first hole after data at %ld)", (long)mid);
    if (tail != data_at[1] + BLOCK) ckpt_fail("tail hole lost (%ld)", (long)tail);
    ckpt_pass();
}
