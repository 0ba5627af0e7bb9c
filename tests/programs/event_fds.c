/* eventfd (count, semaphore mode) + timerfd (armed, periodic) + signalfd + epoll with data
 * words that are pointers, all restored and verified by the program itself. */
#include "ckpt_test.h"
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

static int counter_fd, sem_fd, timer_fd, sig_fd, ep;
static uint64_t marker_a = 0xA, marker_b = 0xB;

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    counter_fd = eventfd(7, EFD_NONBLOCK);
    sem_fd = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
    timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec its = {{0, 20 * 1000000}, {0, 20 * 1000000}};
    timerfd_settime(timer_fd, 0, &its, NULL);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR2);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sig_fd = signalfd(-1, &mask, SFD_NONBLOCK);
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &marker_a};
    epoll_ctl(ep, EPOLL_CTL_ADD, counter_fd, &ev);
    ev.data.ptr = &marker_b;
    epoll_ctl(ep, EPOLL_CTL_ADD, timer_fd, &ev);
    ev.data.u64 = 0x1122334455667788ULL;
    ev.events = EPOLLIN | EPOLLET;
    epoll_ctl(ep, EPOLL_CTL_ADD, sig_fd, &ev);
    ckpt_ready();
    while (!ckpt_verify_requested) pause();

    uint64_t v;
    if (read(counter_fd, &v, 8) != 8 || v != 7) ckpt_fail("eventfd count %lu", (unsigned long)v);
    if (read(sem_fd, &v, 8) != 8 || v != 1) ckpt_fail("semaphore mode lost (read %lu)", (unsigned long)v);
    if (read(sem_fd, &v, 8) != 8 || read(sem_fd, &v, 8) != 8 || read(sem_fd, &v, 8) != -1)
        ckpt_fail("semaphore count wrong");
    uint64_t c = 7;
    write(counter_fd, &c, 8);
    kill(getpid(), SIGUSR2);
    int seen_a = 0, seen_b = 0, seen_sig = 0;
    for (int round = 0; round < 50 && !(seen_a && seen_b && seen_sig); round++) {
        struct epoll_event out[8];
        int n = epoll_wait(ep, out, 8, 100);
        for (int i = 0; i < n; i++) {
            if (out[i].data.ptr == &marker_a) seen_a = 1;
            else if (out[i].data.ptr == &marker_b) {
                if (read(timer_fd, &v, 8) == 8 && v >= 1) seen_b = 1;
            } else if (out[i].data.u64 == 0x1122334455667788ULL) {
                struct signalfd_siginfo si;
                if (read(sig_fd, &si, sizeof si) == sizeof si && si.ssi_signo == SIGUSR2) seen_sig = 1;
            } else ckpt_fail("epoll returned unknown data %llx", (unsigned long long)out[i].data.u64);
        }
    }
    if (!seen_a) ckpt_fail("eventfd not reported by epoll");
    if (!seen_b) ckpt_fail("timerfd stopped firing");
    if (!seen_sig) ckpt_fail("signalfd did not deliver SIGUSR2");
    /* the registration is keyed by our fd numbers */
    if (epoll_ctl(ep, EPOLL_CTL_DEL, timer_fd, NULL) != 0) ckpt_fail("EPOLL_CTL_DEL failed");
    ckpt_pass();
}
