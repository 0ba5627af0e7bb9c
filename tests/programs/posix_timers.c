/* POSIX timers (timer_create) across a checkpoint:
 *  - PERIODIC: CLOCK_MONOTONIC, SIGEV_SIGNAL with a sigev_value, every 20 ms: keeps firing
 *    after restore, each signal carrying its value and timer id;
 *  - TO_THREAD: CLOCK_MONOTONIC, SIGEV_THREAD_ID to the worker thread, every 30 ms: keeps
 *    firing after restore, on the worker, with its value;
 *  - ONESHOT: CLOCK_REALTIME, due in 1000 s; CPU: CLOCK_PROCESS_CPUTIME_ID, due after 3600 s
 *    of CPU time, then every second; QUIET: SIGEV_NONE, due in 500 s: their remaining time
 *    after restore is no more than before the checkpoint and not far less;
 *  - DISARMED: created and never armed: still disarmed;
 *  - CALLBACK: SIGEV_THREAD every 25 ms (glibc runs the callback from a helper thread that
 *    the kernel timer signals): keeps calling it after restore, with its value;
 *  - OVERRUN: every 300 ms with its signal blocked; taken once after 1 s (so its last
 *    overrun count is about 2) and pending again by the checkpoint: after restore
 *    timer_getoverrun reports the same count and its signal is still there to take.
 * /proc/self/timers (ids, signals, values, notification targets, clocks) must read the
 * same after restore as before.
 */
#include "ckpt_test.h"
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#define SIG_PERIODIC (SIGRTMIN + 3)
#define SIG_THREAD (SIGRTMIN + 4)
#define SIG_OVERRUN (SIGRTMIN + 5)
#define SIG_QUIET (SIGRTMIN + 6)
enum { PERIODIC, TO_THREAD, ONESHOT, CPU, QUIET, DISARMED, OVERRUN, CALLBACK, NTIMERS };
static const int values[NTIMERS] = {0xa1, 0xd4, 0xb2, 0xc3, 0xe5, 0xf6, 0x17, 0x28};

static timer_t timers[NTIMERS];
static struct itimerspec before[NTIMERS];
static volatile int periodic_ticks, periodic_bad, thread_ticks, thread_bad, callback_calls, callback_bad;
static volatile pid_t worker_tid;
static char timers_before[4096];

static long long ns(const struct timespec *t) { return t->tv_sec * 1000000000LL + t->tv_nsec; }

static void on_periodic(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)uc;
    if (si->si_code != SI_TIMER || si->si_value.sival_int != values[PERIODIC]
        || si->si_timerid != (int)(intptr_t)timers[PERIODIC])
        periodic_bad++;
    periodic_ticks++;
}

static void on_thread(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)uc;
    if (si->si_code != SI_TIMER || si->si_value.sival_int != values[TO_THREAD] || gettid() != worker_tid)
        thread_bad++;
    thread_ticks++;
}

static void on_callback(union sigval value) {
    if (value.sival_int != values[CALLBACK]) callback_bad++;
    callback_calls++;
}

static void *worker(void *arg) {
    (void)arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1); /* SIGUSR1 is for the main thread */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    worker_tid = gettid();
    for (;;) pause();
    return NULL;
}

static void make(int which, clockid_t clock, int notify, int sig) {
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = notify;
    sev.sigev_signo = sig;
    sev.sigev_value.sival_int = values[which];
    if (notify == SIGEV_THREAD_ID) sev._sigev_un._tid = worker_tid;
    if (notify == SIGEV_THREAD) sev.sigev_notify_function = on_callback;
    if (timer_create(clock, &sev, &timers[which])) ckpt_fail("timer_create %d: %s", which, strerror(errno));
}

static void arm(int which, long long value_ns, long long interval_ns) {
    struct itimerspec its = {{interval_ns / 1000000000, interval_ns % 1000000000},
                             {value_ns / 1000000000, value_ns % 1000000000}};
    if (timer_settime(timers[which], 0, &its, NULL)) ckpt_fail("timer_settime %d: %s", which, strerror(errno));
}

/* /proc/self/timers with its 4-line entries sorted, so the listing order does not matter. */
static void read_timers(char *out, size_t size) {
    char text[4096], *entries[64];
    int n = 0;
    FILE *f = fopen("/proc/self/timers", "r");
    if (!f) ckpt_fail("open /proc/self/timers: %s", strerror(errno));
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = 0;
    for (char *p = strstr(text, "ID: "); p && n < 64; p = strstr(p + 1, "\nID: ")) {
        if (*p == '\n') *p++ = 0;
        entries[n++] = p;
    }
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (strcmp(entries[j], entries[i]) < 0) { char *t = entries[i]; entries[i] = entries[j]; entries[j] = t; }
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        strncat(out, entries[i], size - strlen(out) - 2);
        strcat(out, "\n");
    }
}

/* The next SIG_OVERRUN, which is blocked; the handled timer signals may interrupt the wait. */
static int take_overrun_signal(siginfo_t *si) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIG_OVERRUN);
    struct timespec wait = {5, 0};
    int got;
    while ((got = sigtimedwait(&set, si, &wait)) < 0 && errno == EINTR) {}
    return got;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {}
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIG_OVERRUN);
    pthread_sigmask(SIG_BLOCK, &blocked, NULL); /* in every thread */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sa.sa_sigaction = on_periodic;
    sigaction(SIG_PERIODIC, &sa, NULL);
    sa.sa_sigaction = on_thread;
    sigaction(SIG_THREAD, &sa, NULL);
    pthread_t th;
    pthread_create(&th, NULL, worker, NULL);
    while (!worker_tid) sleep_ms(1);

    make(PERIODIC, CLOCK_MONOTONIC, SIGEV_SIGNAL, SIG_PERIODIC);
    make(TO_THREAD, CLOCK_MONOTONIC, SIGEV_THREAD_ID, SIG_THREAD);
    make(ONESHOT, CLOCK_REALTIME, SIGEV_SIGNAL, SIGUSR2);
    make(CPU, CLOCK_PROCESS_CPUTIME_ID, SIGEV_SIGNAL, SIGUSR2);
    make(QUIET, CLOCK_MONOTONIC, SIGEV_NONE, SIG_QUIET);
    make(DISARMED, CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGUSR2);
    make(OVERRUN, CLOCK_MONOTONIC, SIGEV_SIGNAL, SIG_OVERRUN);
    make(CALLBACK, CLOCK_MONOTONIC, SIGEV_THREAD, 0);
    arm(PERIODIC, 20000000, 20000000);
    arm(TO_THREAD, 30000000, 30000000);
    arm(ONESHOT, 1000000000000LL, 0);
    arm(CPU, 3600000000000LL, 1000000000);
    arm(QUIET, 500000000000LL, 0);
    arm(OVERRUN, 300000000, 300000000);
    arm(CALLBACK, 25000000, 25000000);
    sleep_ms(1000);
    siginfo_t si;
    if (take_overrun_signal(&si) != SIG_OVERRUN || si.si_timerid != (int)(intptr_t)timers[OVERRUN])
        ckpt_fail("the overrun timer's first signal did not come");
    int overrun = timer_getoverrun(timers[OVERRUN]);
    if (overrun < 1) ckpt_fail("overrun before checkpoint is %d, expected about 2", overrun);
    for (int i = 0; i < NTIMERS; i++) timer_gettime(timers[i], &before[i]);
    read_timers(timers_before, sizeof timers_before);
    ckpt_ready();

    while (!ckpt_verify_requested) pause();

    char timers_after[4096];
    read_timers(timers_after, sizeof timers_after);
    if (strcmp(timers_before, timers_after))
        ckpt_fail("/proc/self/timers differs: before\n%s after\n%s", timers_before, timers_after);
    for (int i = 0; i < NTIMERS; i++) {
        struct itimerspec now;
        if (timer_gettime(timers[i], &now)) ckpt_fail("timer_gettime %d: %s", i, strerror(errno));
        if (ns(&now.it_interval) != ns(&before[i].it_interval))
            ckpt_fail("timer %d: interval %lld ns, was %lld", i, ns(&now.it_interval), ns(&before[i].it_interval));
        long long left = ns(&now.it_value), was = ns(&before[i].it_value);
        if (i == DISARMED && left) ckpt_fail("the disarmed timer is armed (%lld ns left)", left);
        if ((i == ONESHOT || i == CPU || i == QUIET) && (left > was || left < was - 60000000000LL))
            ckpt_fail("timer %d: %lld ns left, %lld before the checkpoint", i, left, was);
        if ((i == PERIODIC || i == TO_THREAD || i == OVERRUN || i == CALLBACK) && (left <= 0 || left > ns(&now.it_interval)))
            ckpt_fail("periodic timer %d: %lld ns left, interval %lld", i, left, ns(&now.it_interval));
    }
    int overrun_after = timer_getoverrun(timers[OVERRUN]);
    if (overrun_after < overrun || overrun_after > overrun + 1)
        ckpt_fail("overrun count %d after restore, %d before", overrun_after, overrun);
    memset(&si, 0, sizeof si);
    int got = take_overrun_signal(&si);
    if (got != SIG_OVERRUN || si.si_code != SI_TIMER
        || si.si_timerid != (int)(intptr_t)timers[OVERRUN] || si.si_value.sival_int != values[OVERRUN])
        ckpt_fail("the overrun timer's signal is not there after restore (got %d: %s, code %d, timer %d, value %d)",
                  got, got < 0 ? strerror(errno) : "", si.si_code, si.si_timerid, si.si_value.sival_int);

    int periodic_start = periodic_ticks, thread_start = thread_ticks, callback_start = callback_calls;
    for (int waited = 0; waited < 5000 && (periodic_ticks < periodic_start + 5 || thread_ticks < thread_start + 5
                                           || callback_calls < callback_start + 5); waited += 10)
        sleep_ms(10);
    if (periodic_ticks < periodic_start + 5) ckpt_fail("the periodic timer stopped firing");
    if (thread_ticks < thread_start + 5) ckpt_fail("the thread's timer stopped firing");
    if (callback_calls < callback_start + 5) ckpt_fail("the SIGEV_THREAD timer stopped calling back");
    if (periodic_bad || thread_bad || callback_bad)
        ckpt_fail("%d periodic and %d thread signals, %d callbacks had a wrong value, id or thread",
                  periodic_bad, thread_bad, callback_bad);
    ckpt_pass();
}
