/* Threads caught inside blocking system calls at checkpoint time:
 *   "epoll"    epoll_wait(-1) on a pipe          "cond"  pthread_cond_wait (futex)
 *   "sleeprel" clock_nanosleep, relative          "sleepabs" clock_nanosleep, TIMER_ABSTIME
 *   "read"     read() on an empty pipe            "poll"  poll(-1) on an empty pipe
 * Each is woken only after restore (by a write, or the cond) and must see exactly the event
 * it waited for, with no error. The sleepers retry on EINTR the way glibc callers do (the
 * relative one with the remaining time). Their sleeps are an hour long, so a checkpoint,
 * however slow, finds them asleep; after restore the main thread ends them with SIGWAKE:
 * neither may have returned on its own before, and the relative one's remaining time must
 * account for all of its hour (time slept + time left >= an hour).
 * Thread names publish which tid is which. The sleeps start only when SIGUSR2 comes,
 * so that the harness can run `check` first and still catch them asleep in its dump.
 * Other threads block SIGUSR1/SIGUSR2, which only the main thread takes.
 */
#include "ckpt_test.h"
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/epoll.h>
#include <time.h>

#define SLEEP_NS 3600000000000LL
#define SIGWAKE (SIGRTMIN + 1)

enum { T_EPOLL, T_COND, T_SLEEPREL, T_SLEEPABS, T_READ, T_POLL, NTHREADS };
static const char *names[NTHREADS] = {"epoll", "cond", "sleeprel", "sleepabs", "read", "poll"};

static int epoll_pipe[2], read_pipe[2], poll_pipe[2];
static int epfd;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int cond_predicate;
static struct timespec sleep_started;
static char failure[NTHREADS][200];
static volatile int started[NTHREADS];
static int eintr_count[NTHREADS];
static sem_t sleep_go;
static volatile sig_atomic_t sleep_requested, wake_sleepers;
static volatile int sleeper_done[NTHREADS];

static void on_usr2(int sig) { (void)sig; sleep_requested = 1; }
static void on_wake(int sig) { (void)sig; }

#define THREAD_FAIL(i, ...) snprintf(failure[i], sizeof failure[i], __VA_ARGS__)

static long long ns_between(struct timespec a, struct timespec b) {
    return (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
}

static void *epoll_thread(void *arg) {
    (void)arg;
    struct epoll_event ev;
    started[T_EPOLL] = 1;
    int n = epoll_wait(epfd, &ev, 1, -1);
    if (n != 1)
        THREAD_FAIL(T_EPOLL, "epoll_wait returned %d (%s)", n, n < 0 ? strerror(errno) : "");
    else if (ev.data.u64 != 0xfeedULL || !(ev.events & EPOLLIN))
        THREAD_FAIL(T_EPOLL, "epoll_wait: wrong event data %llx events %x",
                    (unsigned long long)ev.data.u64, ev.events);
    else {
        char c;
        if (read(epoll_pipe[0], &c, 1) != 1 || c != 'E') THREAD_FAIL(T_EPOLL, "wrong byte after epoll");
    }
    return NULL;
}

static void *cond_thread(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    started[T_COND] = 1;
    while (!cond_predicate) {
        int err = pthread_cond_wait(&cond, &lock);
        if (err) {
            THREAD_FAIL(T_COND, "pthread_cond_wait: %s", strerror(err));
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void *sleeprel_thread(void *arg) {
    (void)arg;
    struct timespec req = {SLEEP_NS / 1000000000LL, SLEEP_NS % 1000000000LL}, rem, t0, t1;
    started[T_SLEEPREL] = 1;
    while (sem_wait(&sleep_go)) ;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int err;
    while ((err = clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &rem)) == EINTR) {
        eintr_count[T_SLEEPREL]++;
        if (wake_sleepers) break;
        req = rem;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long left = rem.tv_sec * 1000000000LL + rem.tv_nsec;
    if (err != EINTR)
        THREAD_FAIL(T_SLEEPREL, "relative sleep ended on its own (%s) after %lld ns",
                    err ? strerror(err) : "no error", ns_between(t0, t1));
    else if (ns_between(t0, t1) + left < SLEEP_NS || left > SLEEP_NS)
        THREAD_FAIL(T_SLEEPREL, "relative sleep: %lld ns slept and %lld left of %lld",
                    ns_between(t0, t1), left, SLEEP_NS);
    sleeper_done[T_SLEEPREL] = 1;
    return NULL;
}

static void *sleepabs_thread(void *arg) {
    (void)arg;
    started[T_SLEEPABS] = 1;
    while (sem_wait(&sleep_go)) ;
    struct timespec deadline = sleep_started, now;
    deadline.tv_sec += SLEEP_NS / 1000000000LL;
    int err;
    while ((err = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL)) == EINTR) {
        eintr_count[T_SLEEPABS]++;
        if (wake_sleepers) break;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (err != EINTR)
        THREAD_FAIL(T_SLEEPABS, "absolute sleep ended on its own (%s), %lld ns early",
                    err ? strerror(err) : "no error", -ns_between(deadline, now));
    sleeper_done[T_SLEEPABS] = 1;
    return NULL;
}

static void *read_thread(void *arg) {
    (void)arg;
    char buf[64] = {0};
    started[T_READ] = 1;
    ssize_t n = read(read_pipe[0], buf, sizeof buf - 1);
    if (n != 5 || memcmp(buf, "hello", 5))
        THREAD_FAIL(T_READ, "read returned %zd (%s) '%s'", n, n < 0 ? strerror(errno) : "", buf);
    return NULL;
}

static void *poll_thread(void *arg) {
    (void)arg;
    struct pollfd p = {.fd = poll_pipe[0], .events = POLLIN};
    started[T_POLL] = 1;
    int n = poll(&p, 1, -1);
    if (n != 1 || !(p.revents & POLLIN))
        THREAD_FAIL(T_POLL, "poll returned %d (%s) revents %x", n, n < 0 ? strerror(errno) : "", p.revents);
    return NULL;
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    if (pipe(epoll_pipe) || pipe(read_pipe) || pipe(poll_pipe)) ckpt_fail("pipe");
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0xfeed};
    if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, epoll_pipe[0], &ev)) ckpt_fail("epoll setup");
    sem_init(&sleep_go, 0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    sa.sa_handler = on_wake;
    sigaction(SIGWAKE, &sa, NULL);
    sigset_t usr, old;
    sigemptyset(&usr);
    sigaddset(&usr, SIGUSR1);
    sigaddset(&usr, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &usr, &old); /* inherited by the threads */

    void *(*fns[NTHREADS])(void *) = {epoll_thread, cond_thread, sleeprel_thread, sleepabs_thread,
                                      read_thread, poll_thread};
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        if (pthread_create(&th[i], NULL, fns[i], NULL)) ckpt_fail("pthread_create");
        pthread_setname_np(th[i], names[i]);
    }
    for (int i = 0; i < NTHREADS; i++)
        while (!started[i]) usleep(1000);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    ckpt_ready();

    while (!ckpt_verify_requested) {
        pause();
        if (sleep_requested == 1) {
            sleep_requested = 2;
            clock_gettime(CLOCK_MONOTONIC, &sleep_started);
            sem_post(&sleep_go);
            sem_post(&sleep_go);
        }
    }
    if (sleep_requested != 2) ckpt_fail("the sleepers were never started");

    /* Nobody may have woken up on their own. */
    for (int i = 0; i < NTHREADS; i++)
        if (failure[i][0]) ckpt_fail("%s thread: %s", names[i], failure[i]);

    if (write(epoll_pipe[1], "E", 1) != 1) ckpt_fail("write epoll pipe");
    pthread_mutex_lock(&lock);
    cond_predicate = 1;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
    if (write(read_pipe[1], "hello", 5) != 5) ckpt_fail("write read pipe");
    if (write(poll_pipe[1], "P", 1) != 1) ckpt_fail("write poll pipe");
    wake_sleepers = 1;
    for (int i = T_SLEEPREL; i <= T_SLEEPABS; i++)
        while (!sleeper_done[i]) {  /* again and again: one may come just before it sleeps */
            pthread_kill(th[i], SIGWAKE);
            usleep(10000);
        }

    for (int i = 0; i < NTHREADS; i++) {
        if (pthread_join(th[i], NULL)) ckpt_fail("pthread_join %s", names[i]);
        if (failure[i][0]) ckpt_fail("%s thread: %s", names[i], failure[i]);
    }
    ckpt_status("info eintr_sleeprel %d", eintr_count[T_SLEEPREL]);
    ckpt_status("info eintr_sleepabs %d", eintr_count[T_SLEEPABS]);
    ckpt_pass();
}
