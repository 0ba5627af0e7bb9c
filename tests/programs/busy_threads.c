/* Several threads that keep writing memory and sleeping. On SIGUSR1 the program checks that
 * every thread still makes progress (none was left stopped or stuck) and that each thread's
 * memory holds what it wrote. Used to check that a failed or killed dump leaves its target
 * unharmed, and that a restore brings it back whole. */
#include "ckpt_test.h"
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define THREADS 3
#define PAGES 64
#define PAGE 4096

static _Atomic long progress[THREADS];
static atomic_int stop;
static unsigned char *memory[THREADS];

static void *work(void *arg) {
    long me = (long)arg;
    for (long round = 1; !atomic_load(&stop); round++) {
        for (int page = 0; page < PAGES; page++)  /* dirty every page, each round */
            memset(memory[me] + page * PAGE, (int)((round + me) & 0xff), PAGE);
        atomic_store(&progress[me], round);
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    pthread_t threads[THREADS];
    for (long i = 0; i < THREADS; i++) {
        memory[i] = calloc(PAGES, PAGE);
        if (!memory[i]) ckpt_fail("calloc");
        if (pthread_create(&threads[i], NULL, work, (void *)i) != 0) ckpt_fail("pthread_create");
    }
    for (int i = 0; i < THREADS; i++)
        while (atomic_load(&progress[i]) == 0) usleep(1000);
    ckpt_ready();
    while (!ckpt_verify_requested) usleep(1000);
    long seen[THREADS];
    for (int i = 0; i < THREADS; i++) seen[i] = atomic_load(&progress[i]);
    for (int i = 0; i < THREADS; i++) {
        int waited = 0;
        while (atomic_load(&progress[i]) < seen[i] + 3) {
            if (++waited > 10000) ckpt_fail("thread %d made no progress in 10 s (round %ld)", i, seen[i]);
            usleep(1000);
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        unsigned char last = (unsigned char)((atomic_load(&progress[i]) + i) & 0xff);
        for (long at = 0; at < (long)PAGES * PAGE; at++)
            if (memory[i][at] != last)
                ckpt_fail("thread %d: byte %ld is %d, not %d as written last", i, at, memory[i][at], last);
    }
    ckpt_pass();
}
