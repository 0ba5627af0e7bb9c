/* Starts children with vfork() all the time, as a shell or a subprocess-heavy program does
 * (posix_spawn uses CLONE_VFORK): each child _exits at once and is reaped. A checkpoint at
 * any moment must either go through or refuse the vfork in progress by name, never wait
 * forever. Appends a byte to STATUS.tick every 100 children; on SIGUSR1 appends "PASS".
 */
#include "ckpt_test.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    char path[4096];
    snprintf(path, sizeof path, "%s.tick", ckpt_status_path);
    int tick = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (tick < 0) ckpt_fail("open %s", path);
    ckpt_ready();
    for (unsigned long n = 1; !ckpt_verify_requested; n++) {
        pid_t child = vfork();
        if (child == 0) _exit(7);
        int status;
        if (child < 0) ckpt_fail("vfork");
        while (waitpid(child, &status, 0) < 0)
            if (errno != EINTR) ckpt_fail("waitpid");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 7) ckpt_fail("child status %#x", status);
        if (n % 100 == 0 && write(tick, ".", 1) != 1) ckpt_fail("tick");
    }
    ckpt_pass();
}
