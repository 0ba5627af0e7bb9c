/* Signal state across a checkpoint:
 *  - SIGUSR2: handler with SA_RESTART | SA_SIGINFO | SA_ONSTACK and a sa_mask, run on the
 *    main thread's sigaltstack (checked by where its stack is);
 *  - SIGHUP ignored (SIG_IGN), and still ignored after restore (raise() does nothing);
 *  - a signal pending on one thread only (pthread_sigqueue, blocked there) and a process-wide
 *    pending one queued twice with sigqueue (blocked everywhere): after restore they are still
 *    pending and, once unblocked, delivered with their si_value payloads, in order;
 *  - ITIMER_REAL firing every 5 ms: keeps ticking after restore (only the main thread takes
 *    SIGALRM), and the interval is unchanged;
 *  - per-thread signal masks: the main thread and the worker block different sets;
 *  - SA_RESTART honoured: the main thread sits in read() on an empty pipe throughout, the
 *    5 ms SIGALRM ticks restart it, and only SIGUSR1 (no SA_RESTART) ends it with EINTR.
 */
#include "ckpt_test.h"
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/time.h>

#define SIG_THREAD (SIGRTMIN + 1) /* pending on the worker only */
#define SIG_PROC (SIGRTMIN + 2)   /* pending on the process */
#define ALTSTACK_SIZE (64 * 1024)
#define PAYLOAD_THREAD 0x1234
#define PAYLOAD_PROC1 0xabcd
#define PAYLOAD_PROC2 0xabce

static char altstack[ALTSTACK_SIZE] __attribute__((aligned(16)));
static volatile sig_atomic_t usr2_count, usr2_on_altstack, usr2_flags_ok;
static volatile sig_atomic_t ticks;
static volatile int thread_sig_value, thread_sig_code, thread_sig_pid, thread_sig_count;
static volatile int proc_sig_values[4], proc_sig_count, proc_sig_code;
static volatile pid_t thread_sig_tid;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int worker_ready, worker_go, worker_done;
static char worker_failure[256];
static pid_t worker_tid;

static void on_usr2(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    char here;
    usr2_count++;
    usr2_on_altstack = &here >= altstack && &here < altstack + ALTSTACK_SIZE;
    usr2_flags_ok = sig == SIGUSR2 && si->si_signo == SIGUSR2;
}

static void on_alarm(int sig) { (void)sig; ticks++; }

static void on_thread_sig(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)uc;
    thread_sig_value = si->si_value.sival_int;
    thread_sig_code = si->si_code;
    thread_sig_pid = si->si_pid;
    thread_sig_tid = gettid();
    thread_sig_count++;
}

static void on_proc_sig(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)uc;
    if (proc_sig_count < 4) proc_sig_values[proc_sig_count] = si->si_value.sival_int;
    proc_sig_code = si->si_code;
    proc_sig_count++;
}

static void mask_of(sigset_t *set, const int *sigs) {
    sigemptyset(set);
    for (; *sigs; sigs++) sigaddset(set, *sigs);
}

static const char *mask_diff(const sigset_t *want) {
    static char buf[128];
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP && sigismember(&cur, s) != sigismember(want, s)) {
            snprintf(buf, sizeof buf, "signal %d is %s", s, sigismember(&cur, s) ? "blocked" : "not blocked");
            return buf;
        }
    return NULL;
}

#define WORKER_FAIL(...) do { snprintf(worker_failure, sizeof worker_failure, __VA_ARGS__); goto out; } while (0)

static void *worker(void *arg) {
    (void)arg;
    int sigs[] = {SIG_THREAD, SIG_PROC, SIGALRM, SIGUSR1, SIGTERM, SIGWINCH, 0};
    sigset_t want;
    mask_of(&want, sigs);
    pthread_sigmask(SIG_SETMASK, &want, NULL);
    pthread_mutex_lock(&lock);
    worker_tid = gettid();
    worker_ready = 1;
    pthread_cond_broadcast(&cond);
    while (!worker_go) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);

    const char *diff = mask_diff(&want);
    if (diff) WORKER_FAIL("worker mask changed: %s", diff);
    sigset_t pend;
    sigpending(&pend);
    if (!sigismember(&pend, SIG_THREAD)) WORKER_FAIL("thread-directed signal no longer pending");
    if (!sigismember(&pend, SIG_PROC)) WORKER_FAIL("process-wide signal not pending (seen from worker)");
    if (thread_sig_count) WORKER_FAIL("thread-directed signal delivered while blocked");
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, SIG_THREAD);
    pthread_sigmask(SIG_UNBLOCK, &one, NULL); /* delivered before this returns */
    if (thread_sig_count != 1) WORKER_FAIL("thread-directed signal delivered %d times", thread_sig_count);
    if (thread_sig_value != PAYLOAD_THREAD) WORKER_FAIL("thread signal payload %#x", thread_sig_value);
    if (thread_sig_code != SI_QUEUE) WORKER_FAIL("thread signal si_code %d, expected SI_QUEUE", thread_sig_code);
    if (thread_sig_pid != getpid()) WORKER_FAIL("thread signal si_pid %d", thread_sig_pid);
    if (thread_sig_tid != gettid()) WORKER_FAIL("thread signal ran on tid %d, not the worker", thread_sig_tid);
out:
    pthread_mutex_lock(&lock);
    worker_done = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    stack_t ss = {.ss_sp = altstack, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
    if (sigaltstack(&ss, NULL)) ckpt_fail("sigaltstack");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr2;
    sa.sa_flags = SA_RESTART | SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGRTMIN + 5);
    if (sigaction(SIGUSR2, &sa, NULL)) ckpt_fail("sigaction USR2");

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGHUP, &sa, NULL)) ckpt_fail("sigaction HUP");

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGALRM, &sa, NULL)) ckpt_fail("sigaction ALRM");

    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_thread_sig;
    sa.sa_flags = SA_SIGINFO;
    if (sigaction(SIG_THREAD, &sa, NULL)) ckpt_fail("sigaction SIG_THREAD");
    sa.sa_sigaction = on_proc_sig;
    if (sigaction(SIG_PROC, &sa, NULL)) ckpt_fail("sigaction SIG_PROC");

    /* The main thread blocks SIG_PROC and SIGINT; SIG_THREAD is blocked on the worker only. */
    int main_sigs[] = {SIG_PROC, SIGINT, SIGQUIT, 0};
    sigset_t main_mask;
    mask_of(&main_mask, main_sigs);
    pthread_sigmask(SIG_SETMASK, &main_mask, NULL);

    pthread_t th;
    if (pthread_create(&th, NULL, worker, NULL)) ckpt_fail("pthread_create");
    pthread_mutex_lock(&lock);
    while (!worker_ready) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);

    union sigval v = {.sival_int = PAYLOAD_THREAD};
    if (pthread_sigqueue(th, SIG_THREAD, v)) ckpt_fail("pthread_sigqueue");
    v.sival_int = PAYLOAD_PROC1;
    if (sigqueue(getpid(), SIG_PROC, v)) ckpt_fail("sigqueue 1");
    v.sival_int = PAYLOAD_PROC2;
    if (sigqueue(getpid(), SIG_PROC, v)) ckpt_fail("sigqueue 2");

    struct itimerval it = {.it_interval = {0, 5000}, .it_value = {0, 5000}};
    if (setitimer(ITIMER_REAL, &it, NULL)) ckpt_fail("setitimer");
    while (ticks < 3) pause();
    int quiet[2];
    if (pipe(quiet)) ckpt_fail("pipe");
    ckpt_ready();

    /* Blocked in read() while SIGALRM (SA_RESTART) keeps interrupting it, before, during and
     * after the checkpoint: only SIGUSR1 (no SA_RESTART) may make it fail with EINTR. */
    char byte;
    while (!ckpt_verify_requested) {
        ssize_t n = read(quiet[0], &byte, 1);
        if (n != -1 || errno != EINTR) ckpt_fail("read on an empty pipe returned %zd", n);
        if (!ckpt_verify_requested) ckpt_fail("SIGALRM handler with SA_RESTART interrupted read()");
    }

    /* dispositions */
    struct sigaction cur;
    sigaction(SIGUSR2, NULL, &cur);
    if (cur.sa_sigaction != on_usr2) ckpt_fail("SIGUSR2 handler changed");
    int want_flags = SA_RESTART | SA_SIGINFO | SA_ONSTACK;
    if ((cur.sa_flags & want_flags) != want_flags) ckpt_fail("SIGUSR2 flags %#x", cur.sa_flags);
    if (!sigismember(&cur.sa_mask, SIGTERM) || !sigismember(&cur.sa_mask, SIGRTMIN + 5) ||
        sigismember(&cur.sa_mask, SIGINT))
        ckpt_fail("SIGUSR2 sa_mask changed");
    sigaction(SIGHUP, NULL, &cur);
    if (cur.sa_handler != SIG_IGN) ckpt_fail("SIGHUP is no longer ignored");
    sigaction(SIGALRM, NULL, &cur);
    if (cur.sa_handler != on_alarm || !(cur.sa_flags & SA_RESTART)) ckpt_fail("SIGALRM action changed");

    /* alternate stack */
    stack_t now;
    if (sigaltstack(NULL, &now)) ckpt_fail("sigaltstack query");
    if (now.ss_sp != altstack || now.ss_size != ALTSTACK_SIZE || (now.ss_flags & SS_DISABLE))
        ckpt_fail("sigaltstack is %p/%zu/%#x", now.ss_sp, now.ss_size, now.ss_flags);
    raise(SIGHUP); /* ignored: nothing happens */
    raise(SIGUSR2);
    if (usr2_count != 1) ckpt_fail("SIGUSR2 handler ran %d times", (int)usr2_count);
    if (!usr2_flags_ok) ckpt_fail("SIGUSR2 handler got a wrong siginfo");
    if (!usr2_on_altstack) ckpt_fail("SIGUSR2 handler did not run on the alternate stack");

    /* timer: still armed with the same interval, and still firing */
    struct itimerval left;
    getitimer(ITIMER_REAL, &left);
    if (left.it_interval.tv_sec != 0 || left.it_interval.tv_usec != 5000)
        ckpt_fail("itimer interval %ld.%06ld", (long)left.it_interval.tv_sec, (long)left.it_interval.tv_usec);
    int start = ticks;
    while (ticks < start + 5) pause();

    /* main mask; pending signals */
    const char *diff = mask_diff(&main_mask);
    if (diff) ckpt_fail("main thread mask changed: %s", diff);
    sigset_t pend;
    sigpending(&pend);
    if (!sigismember(&pend, SIG_PROC)) ckpt_fail("process-wide signal no longer pending");
    if (sigismember(&pend, SIG_THREAD)) ckpt_fail("worker's signal shows as pending on the main thread");

    pthread_mutex_lock(&lock);
    worker_go = 1;
    pthread_cond_broadcast(&cond);
    while (!worker_done) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    if (worker_failure[0]) ckpt_fail("%s", worker_failure);

    if (proc_sig_count) ckpt_fail("process-wide signal delivered while blocked everywhere");
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, SIG_PROC);
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    if (proc_sig_count != 2) ckpt_fail("process-wide signal delivered %d times, expected 2", proc_sig_count);
    if (proc_sig_values[0] != PAYLOAD_PROC1 || proc_sig_values[1] != PAYLOAD_PROC2)
        ckpt_fail("process-wide payloads %#x %#x", proc_sig_values[0], proc_sig_values[1]);
    if (proc_sig_code != SI_QUEUE) ckpt_fail("process-wide si_code %d", proc_sig_code);
    pthread_join(th, NULL);
    ckpt_pass();
}
