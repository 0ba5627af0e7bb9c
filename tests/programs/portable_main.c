/* Uses a shared library of its own (portable_lib.c): after restore the library's code
 * and data must be the ones it had, even if the file on disk was replaced meanwhile. */
#include "ckpt_test.h"
#include <string.h>
#include <time.h>

extern const char portable_build[];
int portable_answer(int x);

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    if (portable_answer(7) != 42) ckpt_fail("library answers %d before", portable_answer(7));
    ckpt_ready();
    while (!ckpt_verify_requested) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    if (portable_answer(7) != 42) ckpt_fail("library answers %d after restore", portable_answer(7));
    if (strcmp(portable_build, "PORTABLE_BUILD_MARK") != 0) ckpt_fail("library data is %s", portable_build);
    ckpt_pass();
}
