/* Scheduling is per thread on Linux: each thread sets its own policy, priority, nice value
 * and reset-on-fork flag, and after restore the main thread reads every one back by TID.
 *   main:   SCHED_BATCH, nice 3
 *   plain:  SCHED_OTHER, nice 0 (created before main changed anything)
 *   kind:   SCHED_OTHER, nice 7, reset-on-fork
 *   idle:   SCHED_IDLE, nice 12
 *   fifo:   SCHED_FIFO priority 3       } only with the argument "rt" (needs CAP_SYS_NICE
 *   rr:     SCHED_RR priority 2, nice -4, reset-on-fork }  or RLIMIT_RTPRIO)
 * With the argument "fifo-main" instead: one thread only, main, SCHED_FIFO priority 3, which
 * then gives up CAP_SYS_NICE (and so could not take SCHED_FIFO again by itself).
 */
#include "ckpt_test.h"
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

struct want {
    const char *name;
    int policy; /* with SCHED_RESET_ON_FORK or'ed in */
    int priority, nice;
    pid_t tid;
};

static struct want wants[] = {
    {"main", SCHED_BATCH, 0, 3, 0},
    {"plain", SCHED_OTHER, 0, 0, 0},
    {"kind", SCHED_OTHER | SCHED_RESET_ON_FORK, 0, 7, 0},
    {"idle", SCHED_IDLE, 0, 12, 0},
    {"fifo", SCHED_FIFO, 3, 0, 0},
    {"rr", SCHED_RR | SCHED_RESET_ON_FORK, 2, -4, 0},
};
#define N_PLAIN 4 /* wants[0..3] need no privilege */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int set_up, finished;
static char failure[256];

/* Give the calling thread what `w` says. */
static int apply(struct want *w) {
    struct sched_param p = {.sched_priority = w->priority};
    if (setpriority(PRIO_PROCESS, gettid(), w->nice)) {
        snprintf(failure, sizeof failure, "%s: setpriority: %s", w->name, strerror(errno));
        return -1;
    }
    if (sched_setscheduler(0, w->policy, &p)) {
        snprintf(failure, sizeof failure, "%s: sched_setscheduler: %s", w->name, strerror(errno));
        return -1;
    }
    w->tid = gettid();
    return 0;
}

static void *thread(void *arg) {
    struct want *w = arg;
    pthread_mutex_lock(&lock);
    if (w != &wants[1]) apply(w); /* "plain" keeps what it was created with */
    else w->tid = gettid();
    set_up++;
    pthread_cond_broadcast(&cond);
    while (!finished) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void drop_cap_sys_nice(void) {
    struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &head, data)) ckpt_fail("capget");
    unsigned bit = 1u << (CAP_SYS_NICE % 32);
    data[CAP_SYS_NICE / 32].effective &= ~bit;
    data[CAP_SYS_NICE / 32].permitted &= ~bit;
    data[CAP_SYS_NICE / 32].inheritable &= ~bit;
    if (prctl(PR_CAPBSET_DROP, CAP_SYS_NICE, 0, 0, 0) || syscall(SYS_capset, &head, data))
        ckpt_fail("dropping CAP_SYS_NICE: %s", strerror(errno));
}

static void check(const struct want *w) {
    int policy = sched_getscheduler(w->tid);
    struct sched_param p;
    if (sched_getparam(w->tid, &p)) ckpt_fail("%s: sched_getparam: %s", w->name, strerror(errno));
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, w->tid);
    if (errno) ckpt_fail("%s: getpriority: %s", w->name, strerror(errno));
    if (policy != w->policy || p.sched_priority != w->priority || nice != w->nice)
        ckpt_fail("%s (tid %d): policy %#x priority %d nice %d, expected %#x %d %d", w->name, w->tid,
                  policy, p.sched_priority, nice, w->policy, w->priority, w->nice);
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    int count = argc > 2 && !strcmp(argv[1], "rt") ? 6 : N_PLAIN;
    pthread_t threads[6];
    if (argc > 2 && !strcmp(argv[1], "fifo-main")) {
        wants[0] = wants[4];
        wants[0].name = "main";
        if (apply(&wants[0])) ckpt_fail("%s", failure);
        drop_cap_sys_nice();
        check(&wants[0]);
        ckpt_ready();
        while (!ckpt_verify_requested) pause();
        check(&wants[0]);
        ckpt_pass();
    }
    if (pthread_create(&threads[1], NULL, thread, &wants[1])) ckpt_fail("pthread_create");
    pthread_mutex_lock(&lock);
    while (set_up < 1) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    if (apply(&wants[0])) ckpt_fail("%s", failure);
    for (int i = 2; i < count; i++)
        if (pthread_create(&threads[i], NULL, thread, &wants[i])) ckpt_fail("pthread_create");
    pthread_mutex_lock(&lock);
    while (set_up < count - 1) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    if (failure[0]) ckpt_fail("%s", failure);
    for (int i = 0; i < count; i++) check(&wants[i]);
    ckpt_ready();
    while (!ckpt_verify_requested) pause();

    for (int i = 0; i < count; i++) check(&wants[i]);
    pthread_mutex_lock(&lock);
    finished = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    for (int i = 1; i < count; i++) pthread_join(threads[i], NULL);
    ckpt_pass();
}
