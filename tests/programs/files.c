/* File descriptors across a checkpoint (run in its own scratch directory):
 *  - data.txt read-write at offset 5; log.txt O_WRONLY|O_APPEND; a directory fd;
 *  - FD_CLOEXEC on some fds and not on others;
 *  - gone.txt: 100 KiB written, then unlinked while open, read at offset 1234;
 *  - /dev/null, /dev/zero, /dev/urandom;
 *  - a pipe (both ends here, 256 KiB capacity) with 100 KiB buffered;
 *  - an O_NONBLOCK pipe read end with nothing buffered (must say EAGAIN);
 *  - a FIFO (fifo) with bytes buffered, read and write ends opened separately;
 *  - dup'ed fds (dup, F_DUPFD_CLOEXEC to 100) sharing one offset, and a second open of the
 *    same file that must keep its own offset.
 */
#include "ckpt_test.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define GONE_SIZE (100 * 1024)
#define PIPE_FILL (100 * 1024)

struct fdcheck { int fd; int cloexec; };

static char gone_byte(size_t i) { return (char)(i * 31 + 7); }
static char pipe_byte(size_t i) { return (char)(i % 251); }

static void put_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) ckpt_fail("create %s", path);
    close(fd);
}

static off_t offset(int fd) { return lseek(fd, 0, SEEK_CUR); }

static void check_flags(int fd, const char *what, int want_set, int want_clear) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) ckpt_fail("%s: fd %d is not open: %s", what, fd, strerror(errno));
    if ((fl & want_set) != want_set || (fl & want_clear))
        ckpt_fail("%s: fd %d has flags %#o", what, fd, fl);
}

static void check_cloexec(int fd, const char *what, int want) {
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0 || !!(fl & FD_CLOEXEC) != want)
        ckpt_fail("%s: fd %d FD_CLOEXEC is %d, expected %d", what, fd, fl & FD_CLOEXEC, want);
}

static void check_dev(int fd, const char *what, int major_, int minor_) {
    struct stat st;
    if (fstat(fd, &st) || !S_ISCHR(st.st_mode) || major(st.st_rdev) != (unsigned)major_ ||
        minor(st.st_rdev) != (unsigned)minor_)
        ckpt_fail("%s: fd %d is not device %d:%d", what, fd, major_, minor_);
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);

    put_file("data.txt", "0123456789abcdefghij");
    int data = open("data.txt", O_RDWR);
    lseek(data, 5, SEEK_SET);

    put_file("log.txt", "line1\n");
    int logfd = open("log.txt", O_WRONLY | O_APPEND | O_CLOEXEC);

    int dirfd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat dir_st;
    fstat(dirfd, &dir_st);

    int gone = open("gone.txt", O_RDWR | O_CREAT | O_TRUNC, 0600);
    char *buf = malloc(GONE_SIZE);
    for (size_t i = 0; i < GONE_SIZE; i++) buf[i] = gone_byte(i);
    if (write(gone, buf, GONE_SIZE) != GONE_SIZE) ckpt_fail("write gone.txt");
    if (unlink("gone.txt")) ckpt_fail("unlink gone.txt");
    lseek(gone, 1234, SEEK_SET);

    int devnull = open("/dev/null", O_WRONLY);
    int devzero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    int devrandom = open("/dev/urandom", O_RDONLY);

    int p[2];
    if (pipe(p)) ckpt_fail("pipe");
    if (fcntl(p[1], F_SETPIPE_SZ, 256 * 1024) < 256 * 1024) ckpt_fail("F_SETPIPE_SZ");
    for (size_t i = 0; i < PIPE_FILL; i++) buf[i] = pipe_byte(i);
    if (write(p[1], buf, PIPE_FILL) != PIPE_FILL) ckpt_fail("fill pipe");

    int nb[2];
    if (pipe2(nb, O_NONBLOCK | O_CLOEXEC)) ckpt_fail("pipe2");

    if (mkfifo("fifo", 0600)) ckpt_fail("mkfifo");
    int fifo_r = open("fifo", O_RDONLY | O_NONBLOCK);
    int fifo_w = open("fifo", O_WRONLY);
    if (fifo_r < 0 || fifo_w < 0) ckpt_fail("open fifo");
    if (write(fifo_w, "through the fifo", 16) != 16) ckpt_fail("write fifo");

    put_file("shared_off.txt", "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    int sh_a = open("shared_off.txt", O_RDONLY);
    int sh_b = dup(sh_a);
    int sh_c = fcntl(sh_a, F_DUPFD_CLOEXEC, 100);
    int sh_own = open("shared_off.txt", O_RDONLY);
    lseek(sh_a, 7, SEEK_SET);
    lseek(sh_own, 2, SEEK_SET);
    if (sh_c != 100) ckpt_fail("F_DUPFD_CLOEXEC gave %d", sh_c);

    ckpt_ready();
    while (!ckpt_verify_requested) pause();

    /* regular file with offset */
    check_flags(data, "data.txt", O_RDWR, O_APPEND | O_NONBLOCK);
    check_cloexec(data, "data.txt", 0);
    if (offset(data) != 5) ckpt_fail("data.txt offset %lld", (long long)offset(data));
    char small[64] = {0};
    if (read(data, small, 5) != 5 || memcmp(small, "56789", 5)) ckpt_fail("data.txt read '%s'", small);
    if (write(data, "XY", 2) != 2) ckpt_fail("write data.txt");

    /* O_APPEND: writes land at the end even after another fd extended the file */
    check_flags(logfd, "log.txt", O_WRONLY | O_APPEND, 0);
    check_cloexec(logfd, "log.txt", 1);
    int extra = open("log.txt", O_WRONLY);
    lseek(extra, 0, SEEK_END);
    if (write(extra, "line2\n", 6) != 6) ckpt_fail("write log.txt (extra fd)");
    close(extra);
    if (write(logfd, "line3\n", 6) != 6) ckpt_fail("write log.txt (append fd)");
    int lf = open("log.txt", O_RDONLY);
    memset(small, 0, sizeof small);
    if (read(lf, small, sizeof small - 1) != 18 || strcmp(small, "line1\nline2\nline3\n"))
        ckpt_fail("log.txt holds '%s'", small);
    close(lf);

    /* directory fd */
    struct stat st;
    if (fstat(dirfd, &st) || !S_ISDIR(st.st_mode) || st.st_ino != dir_st.st_ino) ckpt_fail("dir fd changed");
    check_cloexec(dirfd, "dir", 1);
    int via_dir = openat(dirfd, "data.txt", O_RDONLY);
    if (via_dir < 0) ckpt_fail("openat via directory fd: %s", strerror(errno));
    close(via_dir);

    /* unlinked file */
    if (fstat(gone, &st) || st.st_nlink != 0 || st.st_size != GONE_SIZE)
        ckpt_fail("gone.txt: nlink %ld size %lld", (long)st.st_nlink, (long long)st.st_size);
    if (offset(gone) != 1234) ckpt_fail("gone.txt offset %lld", (long long)offset(gone));
    check_flags(gone, "gone.txt", O_RDWR, 0);
    memset(buf, 0, GONE_SIZE);
    if (pread(gone, buf, GONE_SIZE, 0) != GONE_SIZE) ckpt_fail("read gone.txt");
    for (size_t i = 0; i < GONE_SIZE; i++)
        if (buf[i] != gone_byte(i)) ckpt_fail("gone.txt differs at %zu", i);
    if (access("gone.txt", F_OK) == 0) ckpt_fail("gone.txt reappeared in the directory");

    /* devices */
    check_dev(devnull, "/dev/null", 1, 3);
    check_dev(devzero, "/dev/zero", 1, 5);
    check_dev(devrandom, "/dev/urandom", 1, 9);
    check_flags(devnull, "/dev/null", O_WRONLY, 0);
    check_cloexec(devzero, "/dev/zero", 1);
    check_cloexec(devrandom, "/dev/urandom", 0);
    if (write(devnull, "x", 1) != 1) ckpt_fail("write /dev/null");
    memset(small, 1, sizeof small);
    if (read(devzero, small, 32) != 32) ckpt_fail("read /dev/zero");
    for (int i = 0; i < 32; i++) if (small[i]) ckpt_fail("/dev/zero gave a non-zero byte");
    if (read(devrandom, small, 32) != 32) ckpt_fail("read /dev/urandom");

    /* pipe with buffered bytes */
    if (fcntl(p[0], F_GETPIPE_SZ) != 256 * 1024) ckpt_fail("pipe capacity %d", fcntl(p[0], F_GETPIPE_SZ));
    check_flags(p[0], "pipe read end", O_RDONLY, O_NONBLOCK);
    check_flags(p[1], "pipe write end", O_WRONLY, O_NONBLOCK);
    if (write(p[1], "tail", 4) != 4) ckpt_fail("write pipe after restore");
    size_t got = 0;
    while (got < PIPE_FILL + 4) {
        ssize_t n = read(p[0], buf + got, PIPE_FILL + 4 - got);
        if (n <= 0) ckpt_fail("read pipe: %zd after %zu bytes", n, got);
        got += n;
    }
    for (size_t i = 0; i < PIPE_FILL; i++)
        if (buf[i] != pipe_byte(i)) ckpt_fail("pipe data differs at %zu", i);
    if (memcmp(buf + PIPE_FILL, "tail", 4)) ckpt_fail("pipe tail wrong");

    /* O_NONBLOCK pipe */
    check_flags(nb[0], "nonblocking pipe", O_NONBLOCK, 0);
    check_cloexec(nb[0], "nonblocking pipe", 1);
    errno = 0;
    if (read(nb[0], small, 1) != -1 || errno != EAGAIN) ckpt_fail("empty O_NONBLOCK pipe did not say EAGAIN");

    /* FIFO */
    check_flags(fifo_r, "fifo read end", O_RDONLY | O_NONBLOCK, 0);
    check_flags(fifo_w, "fifo write end", O_WRONLY, O_NONBLOCK);
    memset(small, 0, sizeof small);
    if (read(fifo_r, small, sizeof small) != 16 || memcmp(small, "through the fifo", 16))
        ckpt_fail("fifo gave '%s'", small);
    if (write(fifo_w, "again", 5) != 5 || read(fifo_r, small, 5) != 5 || memcmp(small, "again", 5))
        ckpt_fail("fifo does not connect its ends after restore");

    /* shared offsets */
    if (offset(sh_a) != 7 || offset(sh_b) != 7 || offset(sh_c) != 7)
        ckpt_fail("dup'ed offsets %lld %lld %lld", (long long)offset(sh_a), (long long)offset(sh_b),
                  (long long)offset(sh_c));
    check_cloexec(sh_a, "dup a", 0);
    check_cloexec(sh_b, "dup b", 0);
    check_cloexec(sh_c, "dup c", 1);
    if (read(sh_b, small, 3) != 3 || memcmp(small, "HIJ", 3)) ckpt_fail("read through dup");
    if (offset(sh_a) != 10 || offset(sh_c) != 10) ckpt_fail("dup'ed fds no longer share an offset");
    if (offset(sh_own) != 2) ckpt_fail("separately opened fd has offset %lld", (long long)offset(sh_own));
    if (read(sh_own, small, 2) != 2 || memcmp(small, "CD", 2) || offset(sh_a) != 10)
        ckpt_fail("separately opened fd shares the dup'ed offset");

    /* data.txt got the write at offset 10 */
    int df = open("data.txt", O_RDONLY);
    memset(small, 0, sizeof small);
    if (read(df, small, 20) != 20 || strcmp(small, "0123456789XYcdefghij")) ckpt_fail("data.txt holds '%s'", small);
    close(df);
    ckpt_pass();
}
