/* The main thread calls pthread_exit while another thread runs on: the process lives on
 * with its leader a zombie. The other thread reports ready once the leader is gone. */
#include "ckpt_test.h"
#include <pthread.h>

static void *worker(void *arg) {
    char path[64], state = 0;
    (void)arg;
    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", getpid());
    while (state != 'Z') {
        FILE *f = fopen(path, "r");
        if (!f || fscanf(f, "%*d %*s %c", &state) != 1)
            ckpt_fail("cannot read the leader's state");
        fclose(f);
        usleep(1000);
    }
    ckpt_ready();
    while (!ckpt_verify_requested)
        usleep(1000);
    ckpt_pass();
    return NULL;
}

int main(int argc, char **argv) {
    pthread_t thread;
    ckpt_init(argc, argv);
    if (pthread_create(&thread, NULL, worker, NULL))
        ckpt_fail("pthread_create");
    pthread_exit(NULL);
}
