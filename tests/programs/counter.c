/* Smallest end-to-end program: a counter in memory and in a register-held loop. */
#include "ckpt_test.h"
#include <time.h>

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    volatile long counter = 0;
    long shadow = 0;
    ckpt_ready();
    while (!ckpt_verify_requested) {
        counter++;
        shadow++;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    if (counter != shadow) ckpt_fail("counter %ld != shadow %ld", counter, shadow);
    if (counter < 1) ckpt_fail("never counted");
    ckpt_pass();
}
