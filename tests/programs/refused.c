/* Holds one kind of state that a checkpoint must refuse by name, and keeps working:
 *
 *   refused MODE STATUS_FILE
 *
 * MODE is one of the names in `setups` below. After setting it up the program writes
 * "ready", then appends one byte to STATUS.tick every 10 ms (so a test sees it make
 * progress) until SIGUSR1, then appends "PASS". It only needs read() and write() once set
 * up (ticks come from a timerfd), so it also keeps running in seccomp's strict mode.
 * A mode that the kernel cannot set up here writes "unavailable <why>", "ready", and exits.
 */
#pragma GCC diagnostic ignored "-Wunused-function"  /* the header's helpers this one does not use */
#include "ckpt_test.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/io_uring.h>
#include <linux/perf_event.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>

#ifndef __NR_mseal
#define __NR_mseal 462
#endif

static int status_fd, tick_fd, timer_fd;

static void say(const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    buf[n++] = '\n';
    if (write(status_fd, buf, n) != n) _exit(3);
}

/* Nothing to hold here: say why, and that setting up is over. */
static void unavailable(const char *what) {
    say("unavailable %s: %s", what, strerror(errno));
    say("ready");
    exit(0);
}

static void die(const char *what) {
    say("FAIL setting up %s: %s", what, strerror(errno));
    exit(1);
}

/* Tick until SIGUSR1, with nothing but read() and write(). */
static void tick_until_verify(void) {
    uint64_t expirations;
    while (!ckpt_verify_requested) {
        if (read(timer_fd, &expirations, sizeof expirations) < 0 && errno != EINTR) _exit(4);
        if (write(tick_fd, ".", 1) != 1) _exit(5);
    }
}

static void *map_pages(size_t size, int flags) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void setup_io_uring(void) {
    struct io_uring_params params = {0};
    if (syscall(__NR_io_uring_setup, 4, &params) < 0) unavailable("io_uring_setup");
}

static void setup_fanotify(void) {
    if (fanotify_init(FAN_CLASS_NOTIF, O_RDONLY) < 0) unavailable("fanotify_init");
}

static void setup_userfaultfd(void) {
    if (syscall(__NR_userfaultfd, O_CLOEXEC) < 0) unavailable("userfaultfd");
}

static void setup_perf_event(void) {
    struct perf_event_attr attr = {.type = PERF_TYPE_SOFTWARE, .size = sizeof attr,
                                   .config = PERF_COUNT_SW_TASK_CLOCK};
    if (syscall(__NR_perf_event_open, &attr, 0, -1, -1, 0) < 0) unavailable("perf_event_open");
}

static void setup_raw_socket(void) {
    if (socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) < 0) die("raw socket");
}

static void setup_seccomp_filter(void) {
    struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog prog = {.len = 1, .filter = &allow};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs");
    if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) die("seccomp filter");
}

static void setup_seccomp_strict(void) {
    /* entered last, right before ticking (see main) */
}

/* A second thread in strict mode ticks; the main thread (not under seccomp) waits. */
static volatile int strict_entered;

static void *strict_ticker(void *arg) {
    (void)arg;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) < 0) die("strict mode in a thread");
    strict_entered = 1;
    tick_until_verify();
    for (;;) {  /* the main thread ends the process */
        uint64_t expirations;
        if (read(timer_fd, &expirations, sizeof expirations) < 0 && errno != EINTR) _exit(4);
    }
}

static void setup_seccomp_strict_thread(void) {
    pthread_t thread;
    struct timespec pause = {.tv_nsec = 1000000};
    if (pthread_create(&thread, NULL, strict_ticker, NULL)) die("pthread_create");
    while (!strict_entered) nanosleep(&pause, NULL);
}

static void setup_mlock(void) {
    char *p = map_pages(4096, 0);
    if (!p || mlock(p, 4096) < 0) die("mlock");
    p[0] = 1;
}

static void setup_hugetlb(void) {
    char *p = map_pages(2 << 20, MAP_HUGETLB);
    if (!p) unavailable("MAP_HUGETLB (no huge pages reserved in /proc/sys/vm/nr_hugepages)");
    p[0] = 1;
}

static void setup_mseal(void) {
    char *p = map_pages(4096, 0);
    if (!p) die("mmap");
    p[0] = 1;
    if (syscall(__NR_mseal, p, 4096, 0) < 0) unavailable("mseal");
}

/* A file of an ordinary (non-tmpfs) file system, mapped, then removed. */
static void setup_deleted_mapping(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s.mapped", ckpt_status_path);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, 4096) < 0) die("mapped file");
    char *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) die("mmap file");
    close(fd);
    if (unlink(path) < 0) die("unlink");
}

static void setup_scm_rights(void) {
    int pair[2], passed = open("/dev/null", O_RDONLY);
    if (passed < 0 || socketpair(AF_UNIX, SOCK_DGRAM, 0, pair) < 0) die("socketpair");
    char byte = 'x', control[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &passed, sizeof(int));
    if (sendmsg(pair[0], &msg, 0) != 1) die("sendmsg");
    close(passed);  /* only the copy in flight is left */
}

/* A pipe registered as one fd number, then moved to another: the registration stays keyed
 * by the old number, which names nothing now. */
static void setup_epoll_renumbered(void) {
    int ep = epoll_create1(0), pipe_fds[2];
    if (ep < 0 || pipe(pipe_fds) < 0) die("epoll");
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, pipe_fds[0], &ev) < 0) die("epoll_ctl");
    if (dup2(pipe_fds[0], 100) < 0) die("dup2");
    close(pipe_fds[0]);
}

static void setup_inotify_unread(void) {
    char path[4096];
    int in = inotify_init1(0);
    snprintf(path, sizeof path, "%s.watched", ckpt_status_path);
    if (in < 0 || mkdir(path, 0755) < 0) die("inotify");
    if (inotify_add_watch(in, path, IN_CREATE) < 0) die("inotify_add_watch");
    strcat(path, "/new");
    int fd = open(path, O_WRONLY | O_CREAT, 0644);  /* an event nobody reads */
    if (fd < 0) die("create");
    close(fd);
}

static void setup_chroot(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s.root", ckpt_status_path);
    if (mkdir(path, 0755) < 0 || chroot(path) < 0 || chdir("/") < 0) die("chroot");
}

static void setup_removed_cwd(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s.cwd", ckpt_status_path);
    if (mkdir(path, 0755) < 0 || chdir(path) < 0 || rmdir(path) < 0) die("removed cwd");
}

static void setup_lease(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s.leased", ckpt_status_path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die("leased file");
    close(fd);
    fd = open(path, O_RDONLY);
    if (fd < 0 || fcntl(fd, F_SETLEASE, F_RDLCK) < 0) die("F_SETLEASE");
}

static void setup_vfork(void) {
    /* handled in main: the child ticks while the parent waits in vfork() */
}

static const struct { const char *name; void (*setup)(void); } setups[] = {
    {"io_uring", setup_io_uring}, {"fanotify", setup_fanotify},
    {"userfaultfd", setup_userfaultfd}, {"perf_event", setup_perf_event},
    {"raw_socket", setup_raw_socket}, {"seccomp_filter", setup_seccomp_filter},
    {"seccomp_strict", setup_seccomp_strict},
    {"seccomp_strict_thread", setup_seccomp_strict_thread},
    {"mlock", setup_mlock}, {"hugetlb", setup_hugetlb}, {"mseal", setup_mseal},
    {"deleted_mapping", setup_deleted_mapping}, {"scm_rights", setup_scm_rights},
    {"epoll_renumbered", setup_epoll_renumbered}, {"inotify_unread", setup_inotify_unread},
    {"chroot", setup_chroot}, {"removed_cwd", setup_removed_cwd}, {"lease", setup_lease},
    {"vfork", setup_vfork},
};

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    if (argc != 3) { fprintf(stderr, "usage: %s MODE STATUS_FILE\n", argv[0]); return 2; }
    const char *mode = argv[1];
    char path[4096];
    status_fd = open(ckpt_status_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    snprintf(path, sizeof path, "%s.tick", ckpt_status_path);
    tick_fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    timer_fd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec every = {.it_value = {.tv_nsec = 10000000}, .it_interval = {.tv_nsec = 10000000}};
    if (status_fd < 0 || tick_fd < 0 || timer_fd < 0 || timerfd_settime(timer_fd, 0, &every, NULL) < 0)
        return 3;
    size_t i;
    for (i = 0; i < sizeof setups / sizeof setups[0] && strcmp(setups[i].name, mode); i++)
        ;
    if (i == sizeof setups / sizeof setups[0]) { fprintf(stderr, "unknown mode %s\n", mode); return 2; }
    setups[i].setup();

    if (!strcmp(mode, "vfork")) {
        say("ready");
        pid_t child = vfork();
        if (child == 0) {
            tick_until_verify();  /* in the parent's memory, which waits meanwhile */
            _exit(0);
        }
        int status;
        if (child < 0 || waitpid(child, &status, 0) != child || status != 0) {
            say("FAIL vfork child: %d", child < 0 ? -errno : status);
            return 1;
        }
        say("PASS");
        return 0;
    }
    if (!strcmp(mode, "seccomp_strict") && prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) < 0) {
        say("FAIL strict mode: %s", strerror(errno));
        return 1;
    }
    say("ready");
    if (!strcmp(mode, "seccomp_strict_thread")) {
        struct timespec pause = {.tv_nsec = 10000000};
        while (!ckpt_verify_requested) nanosleep(&pause, NULL);
        say("PASS");
        exit(0);
    }
    tick_until_verify();
    say("PASS");
    syscall(__NR_exit, 0);  /* strict mode allows exit, not exit_group */
    return 0;
}
