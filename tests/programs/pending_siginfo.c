/* Pending signals whose siginfo only the kernel (or the receiver itself) may write:
 *  - on a worker thread that blocks them (not the leader): SIGUSR2 sent with pthread_kill
 *    (tgkill: SI_TKILL, or SI_USER on kernels that say so; probed first), and SIG_RT_THREAD twice, first by pthread_kill, then by
 *    pthread_sigqueue (SI_QUEUE, with a payload);
 *  - on the process, blocked by every thread: SIGWINCH and SIG_RT_PROC (twice) sent with
 *    kill (SI_USER), and SIGCHLD from a child that exited with status 7 (CLD_EXITED).
 * After restore each is still pending where it was, and its siginfo (si_code, si_pid,
 * si_uid, si_value, si_status) is the one the kernel wrote, in the original order.
 */
#include "ckpt_test.h"
#include <errno.h>
#include <pthread.h>
#include <sys/wait.h>
#include <time.h>

#define SIG_RT_THREAD (SIGRTMIN + 4)
#define SIG_RT_PROC (SIGRTMIN + 5)
#define PAYLOAD 0x5eed
#define CHILD_STATUS 7

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int worker_ready, worker_go, worker_done;
static char worker_failure[256];
static volatile sig_atomic_t handled;
static int tkill_code; /* the si_code this kernel writes for tgkill */

static void on_signal(int sig) { (void)sig; handled++; }

static void test_set(sigset_t *set) {
    sigemptyset(set);
    int sigs[] = {SIGUSR2, SIG_RT_THREAD, SIGWINCH, SIG_RT_PROC, SIGCHLD, 0};
    for (int *s = sigs; *s; s++) sigaddset(set, *s);
}

/* Take one pending `sig` without waiting; "" when it matches, else why not. */
static const char *take(int sig, int code, pid_t pid, int value, int status) {
    static char why[160];
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    siginfo_t si;
    struct timespec now = {0, 0};
    if (sigtimedwait(&one, &si, &now) != sig) {
        snprintf(why, sizeof why, "signal %d not pending (%s)", sig, strerror(errno));
        return why;
    }
    if (si.si_code != code || si.si_pid != pid || si.si_uid != getuid()) {
        snprintf(why, sizeof why, "signal %d: si_code %d si_pid %d si_uid %d, expected %d %d %d",
                 sig, si.si_code, si.si_pid, si.si_uid, code, pid, getuid());
        return why;
    }
    if (code == SI_QUEUE && si.si_value.sival_int != value) {
        snprintf(why, sizeof why, "signal %d: payload %#x", sig, si.si_value.sival_int);
        return why;
    }
    if (code == CLD_EXITED && si.si_status != status) {
        snprintf(why, sizeof why, "signal %d: si_status %d", sig, si.si_status);
        return why;
    }
    return "";
}

static const char *none_left(int sig) {
    static char why[64];
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    struct timespec now = {0, 0};
    if (sigtimedwait(&one, NULL, &now) == sig) {
        snprintf(why, sizeof why, "signal %d pending once too often", sig);
        return why;
    }
    return "";
}

#define CHECK(expr) do { const char *why_ = (expr); if (*why_) { \
    snprintf(worker_failure, sizeof worker_failure, "worker: %s", why_); goto out; } } while (0)

static void *worker(void *arg) {
    (void)arg;
    sigset_t set;
    test_set(&set);
    sigaddset(&set, SIGUSR1); /* the verify request goes to the main thread */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_mutex_lock(&lock);
    worker_ready = 1;
    pthread_cond_broadcast(&cond);
    while (!worker_go) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);

    CHECK(take(SIGUSR2, tkill_code, getpid(), 0, 0));
    CHECK(take(SIG_RT_THREAD, tkill_code, getpid(), 0, 0));
    CHECK(take(SIG_RT_THREAD, SI_QUEUE, getpid(), PAYLOAD, 0));
    CHECK(none_left(SIGUSR2));
    CHECK(none_left(SIG_RT_THREAD));
out:
    pthread_mutex_lock(&lock);
    worker_done = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    return NULL;
}

#define MAIN_CHECK(expr) do { const char *why_ = (expr); if (*why_) ckpt_fail("main: %s", why_); } while (0)

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* none may run: each stays blocked until taken */
    int handled_sigs[] = {SIGUSR2, SIG_RT_THREAD, SIGWINCH, SIG_RT_PROC, SIGCHLD, 0};
    for (int *s = handled_sigs; *s; s++)
        if (sigaction(*s, &sa, NULL)) ckpt_fail("sigaction %d", *s);
    sigset_t set;
    test_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    if (pthread_kill(pthread_self(), SIGUSR2)) ckpt_fail("pthread_kill self");
    siginfo_t probe;
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    if (sigwaitinfo(&usr2, &probe) != SIGUSR2) ckpt_fail("sigwaitinfo");
    tkill_code = probe.si_code;
    if (tkill_code != SI_TKILL && tkill_code != SI_USER) ckpt_fail("tgkill gave si_code %d", tkill_code);

    pthread_t th;
    if (pthread_create(&th, NULL, worker, NULL)) ckpt_fail("pthread_create");
    pthread_mutex_lock(&lock);
    while (!worker_ready) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);

    if (pthread_kill(th, SIGUSR2)) ckpt_fail("pthread_kill USR2");
    if (pthread_kill(th, SIG_RT_THREAD)) ckpt_fail("pthread_kill RT");
    union sigval v = {.sival_int = PAYLOAD};
    if (pthread_sigqueue(th, SIG_RT_THREAD, v)) ckpt_fail("pthread_sigqueue");
    if (kill(getpid(), SIGWINCH) || kill(getpid(), SIG_RT_PROC) || kill(getpid(), SIG_RT_PROC))
        ckpt_fail("kill");
    pid_t child = fork();
    if (child < 0) ckpt_fail("fork");
    if (child == 0) _exit(CHILD_STATUS);
    int status;
    if (waitpid(child, &status, 0) != child) ckpt_fail("waitpid");
    ckpt_ready();

    while (!ckpt_verify_requested) pause();

    if (handled) ckpt_fail("a blocked signal's handler ran %d times", (int)handled);
    sigset_t pend;
    sigpending(&pend); /* the main thread's own and the process's */
    if (sigismember(&pend, SIGUSR2) || sigismember(&pend, SIG_RT_THREAD))
        ckpt_fail("the worker's signals show as pending on the main thread");
    pthread_mutex_lock(&lock);
    worker_go = 1;
    pthread_cond_broadcast(&cond);
    while (!worker_done) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    if (worker_failure[0]) ckpt_fail("%s", worker_failure);

    MAIN_CHECK(take(SIGWINCH, SI_USER, getpid(), 0, 0));
    MAIN_CHECK(take(SIG_RT_PROC, SI_USER, getpid(), 0, 0));
    MAIN_CHECK(take(SIG_RT_PROC, SI_USER, getpid(), 0, 0));
    MAIN_CHECK(take(SIGCHLD, CLD_EXITED, child, 0, CHILD_STATUS));
    MAIN_CHECK(none_left(SIGWINCH));
    MAIN_CHECK(none_left(SIG_RT_PROC));
    MAIN_CHECK(none_left(SIGCHLD));
    if (handled) ckpt_fail("a blocked signal's handler ran %d times", (int)handled);
    pthread_join(th, NULL);
    ckpt_pass();
}
