/* O_PATH fds (zdtm's opath_file): on a file, a directory, a symlink itself (O_NOFOLLOW) and
 * a FIFO, next to the status file. After restore each is still O_PATH, names the same kind of
 * file and works as a reference (fstatat through the directory, readlinkat on the link). */
#include "ckpt_test.h"
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sys/stat.h>
#include <time.h>

static int opath(const char *dir, const char *name, int extra) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_PATH | extra);
    if (fd < 0) ckpt_fail("open %s: %m", path);
    return fd;
}

static void check(int fd, mode_t type, const char *what) {
    struct stat st;
    if (fstatat(fd, "", &st, AT_EMPTY_PATH) || (st.st_mode & S_IFMT) != type)
        ckpt_fail("%s: not the same kind of file (%m)", what);
    if (!(fcntl(fd, F_GETFL) & O_PATH)) ckpt_fail("%s: no longer O_PATH", what);
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    char here[PATH_MAX], dir[PATH_MAX + 8], path[PATH_MAX + 16];
    snprintf(here, sizeof here, "%s", ckpt_status_path);
    snprintf(dir, sizeof dir, "%s/opath", dirname(here));
    if (mkdir(dir, 0700)) ckpt_fail("mkdir %s: %m", dir);
    snprintf(path, sizeof path, "%s/file", dir);
    int made = creat(path, 0600);
    if (made < 0) ckpt_fail("creat: %m");
    close(made);
    snprintf(path, sizeof path, "%s/link", dir);
    if (symlink("file", path)) ckpt_fail("symlink: %m");
    snprintf(path, sizeof path, "%s/fifo", dir);
    if (mkfifo(path, 0600)) ckpt_fail("mkfifo: %m");
    int file = opath(dir, "file", 0), link = opath(dir, "link", O_NOFOLLOW);
    int fifo = opath(dir, "fifo", 0), directory = opath(dir, ".", O_DIRECTORY);
    ckpt_ready();
    while (!ckpt_verify_requested) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    check(file, S_IFREG, "file"), check(link, S_IFLNK, "link");
    check(fifo, S_IFIFO, "fifo"), check(directory, S_IFDIR, "directory");
    struct stat st;
    if (fstatat(directory, "file", &st, 0)) ckpt_fail("fstatat through the directory: %m");
    char target[16] = {0};
    if (readlinkat(link, "", target, sizeof target - 1) != 4 || strcmp(target, "file"))
        ckpt_fail("readlinkat on the link: '%s' (%m)", target);
    ckpt_pass();
}
