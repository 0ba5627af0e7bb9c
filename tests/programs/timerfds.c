/* timerfds on CLOCK_MONOTONIC and CLOCK_REALTIME, one-shot and periodic, relative and
 * absolute, several of them fired and not read at the checkpoint:
 *  fast:   MONOTONIC, every 10 ms: unread expirations not lost, still firing, same period;
 *  hourly: MONOTONIC, first after 20 ms (fired, unread), then every hour: exactly 1 to read,
 *          next one within the hour, period one hour;
 *  later:  MONOTONIC one-shot in an hour: still armed, nothing to read;
 *  done:   MONOTONIC one-shot after 20 ms (fired, unread): exactly 1 to read, disarmed;
 *  wall:   REALTIME, first after 20 ms (fired, unread), then every hour;
 *  alarm:  REALTIME one-shot at an absolute wall time an hour away: the same deadline, and
 *          still absolute (fdinfo "settime flags").
 */
#include "ckpt_test.h"
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <sys/timerfd.h>
#include <time.h>

#define MS 1000000LL
#define NS 1000000000LL
#define HOUR 3600LL

static int64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec * NS + ts.tv_nsec;
}

static int make(const char *name, clockid_t clock, int flags, int64_t value, int64_t interval) {
    int fd = timerfd_create(clock, TFD_NONBLOCK);
    if (fd < 0) ckpt_fail("timerfd_create %s", name);
    struct itimerspec its = {{interval / NS, interval % NS}, {value / NS, value % NS}};
    if (timerfd_settime(fd, flags, &its, NULL)) ckpt_fail("timerfd_settime %s: %s", name, strerror(errno));
    return fd;
}

static void wait_fired(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (poll(&p, 1, -1) != 1) {}
}

static uint64_t expirations(const char *name, int fd) {
    uint64_t n = 0;
    if (read(fd, &n, 8) != 8) {
        if (errno == EAGAIN) return 0;
        ckpt_fail("read %s: %s", name, strerror(errno));
    }
    return n;
}

static void check_spec(const char *name, int fd, int64_t interval, int64_t value_min, int64_t value_max) {
    struct itimerspec its;
    if (timerfd_gettime(fd, &its)) ckpt_fail("timerfd_gettime %s", name);
    int64_t got_interval = its.it_interval.tv_sec * NS + its.it_interval.tv_nsec;
    int64_t got_value = its.it_value.tv_sec * NS + its.it_value.tv_nsec;
    if (got_interval != interval)
        ckpt_fail("%s: interval %" PRId64 " ns, expected %" PRId64, name, got_interval, interval);
    if (got_value < value_min || got_value > value_max)
        ckpt_fail("%s: %" PRId64 " ns left, expected %" PRId64 "..%" PRId64, name, got_value, value_min, value_max);
}

static int settime_flags(int fd) {
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    if (!f) ckpt_fail("open %s", path);
    int flags = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "settime flags: %o", &flags) == 1) break;
    fclose(f);
    return flags;
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    int64_t armed = now_ns(CLOCK_MONOTONIC);
    int fast = make("fast", CLOCK_MONOTONIC, 0, 10 * MS, 10 * MS);
    int hourly = make("hourly", CLOCK_MONOTONIC, 0, 20 * MS, HOUR * NS);
    int later = make("later", CLOCK_MONOTONIC, 0, HOUR * NS, 0);
    int done = make("done", CLOCK_MONOTONIC, 0, 20 * MS, 0);
    int wall = make("wall", CLOCK_REALTIME, 0, 20 * MS, HOUR * NS);
    int64_t deadline = now_ns(CLOCK_REALTIME) + HOUR * NS;
    int alarm_fd = make("alarm", CLOCK_REALTIME, TFD_TIMER_ABSTIME, deadline, 0);
    wait_fired(hourly);
    wait_fired(done);
    wait_fired(wall);
    int64_t due_fast = (now_ns(CLOCK_MONOTONIC) - armed) / (10 * MS); /* fired at least this often */
    ckpt_ready();
    while (!ckpt_verify_requested) pause();

    uint64_t n = expirations("fast", fast);
    if (n < (uint64_t)due_fast) ckpt_fail("fast: %" PRIu64 " expirations to read, at least %" PRId64 " were due", n, due_fast);
    check_spec("fast", fast, 10 * MS, 1, 10 * MS);
    wait_fired(fast);
    if (expirations("fast", fast) < 1) ckpt_fail("fast: stopped firing");

    check_spec("hourly", hourly, HOUR * NS, (HOUR - 600) * NS, HOUR * NS);
    if ((n = expirations("hourly", hourly)) != 1) ckpt_fail("hourly: %" PRIu64 " expirations to read, expected 1", n);
    check_spec("later", later, 0, (HOUR - 600) * NS, HOUR * NS);
    if ((n = expirations("later", later)) != 0) ckpt_fail("later: fired early (%" PRIu64 ")", n);
    check_spec("done", done, 0, 0, 0);
    if ((n = expirations("done", done)) != 1) ckpt_fail("done: %" PRIu64 " expirations to read, expected 1", n);
    check_spec("wall", wall, HOUR * NS, (HOUR - 600) * NS, HOUR * NS);
    if ((n = expirations("wall", wall)) != 1) ckpt_fail("wall: %" PRIu64 " expirations to read, expected 1", n);

    struct itimerspec its;
    int64_t before = now_ns(CLOCK_REALTIME);
    if (timerfd_gettime(alarm_fd, &its)) ckpt_fail("timerfd_gettime alarm");
    int64_t after = now_ns(CLOCK_REALTIME), left = its.it_value.tv_sec * NS + its.it_value.tv_nsec;
    if (before + left > deadline + MS || after + left < deadline - MS) /* 1 ms for clock rounding */
        ckpt_fail("alarm: due %" PRId64 "..%" PRId64 " ns from its deadline", before + left - deadline,
                  after + left - deadline);
    if (settime_flags(alarm_fd) != TFD_TIMER_ABSTIME)
        ckpt_fail("alarm: settime flags %o, expected absolute", settime_flags(alarm_fd));
    if ((n = expirations("alarm", alarm_fd)) != 0) ckpt_fail("alarm: fired early (%" PRIu64 ")", n);
    ckpt_pass();
}
