/* The protocol every test program follows (after CRIU's zdtm):
 *   The last argument is a status file. The program sets up its state, then writes "ready\n".
 *   It keeps running until SIGUSR1 arrives (sent after dump -> kill -> restore), then
 *   checks its own state and appends "PASS\n" or "FAIL <why>\n" and exits 0 or 1.
 */
#ifndef CKPT_TEST_H
#define CKPT_TEST_H
#define _GNU_SOURCE
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *ckpt_status_path;
static volatile sig_atomic_t ckpt_verify_requested;

static void ckpt_on_usr1(int sig) { (void)sig; ckpt_verify_requested = 1; }

static void ckpt_status(const char *fmt, ...) {
    FILE *f = fopen(ckpt_status_path, "a");
    if (!f) _exit(3);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

/* Call first: remembers the status file and installs the SIGUSR1 handler. */
static void ckpt_init(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s STATUS_FILE\n", argv[0]); exit(2); }
    ckpt_status_path = argv[argc - 1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ckpt_on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
}

static void ckpt_ready(void) { ckpt_status("ready"); }

static void ckpt_pass(void) { ckpt_status("PASS"); exit(0); }

static void ckpt_fail(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ckpt_status("FAIL %s", buf);
    exit(1);
}
#endif
