/* A process whose vdso is another kernel build's, calling it the way the C library does.
 *   vdso_foreign FOREIGN_VDSO STATUS
 * At start it copies FOREIGN_VDSO (a vdso64.so of another kernel) over its own [vdso] area:
 * from then on its vdso has that build's code and symbol offsets, as if it had been started
 * under that kernel. It resolves the time functions from its (now foreign) vdso's dynamic
 * symbol table into function pointers, as glibc does at start, and does not call them (the
 * foreign code does not match this kernel's data page), nor the C library's time functions
 * (they use this kernel's offsets). After the restore it calls every pointer and compares
 * the results with the system calls: they reach this kernel's vdso only through the proxy
 * the restore put where its vdso was. If its vdso has getrandom, that is called too, the way
 * the C library does: its state parameters first, then with a state mapped as they say. */
#include "ckpt_test.h"
#include <elf.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>

typedef int (*gettime_fn)(clockid_t, struct timespec *);
typedef int (*gettimeofday_fn)(struct timeval *, void *);
typedef time_t (*time_fn)(time_t *);
typedef long (*getcpu_fn)(unsigned *, unsigned *, void *);
typedef ssize_t (*getrandom_fn)(void *, size_t, unsigned, void *, size_t);
struct getrandom_params { uint32_t size_of_opaque_state, mmap_prot, mmap_flags, reserved[13]; };

static const char *names[] = {
    "__vdso_clock_gettime", "clock_gettime", "__vdso_gettimeofday", "gettimeofday",
    "__vdso_time", "time", "__vdso_getcpu", "getcpu", "__vdso_clock_getres", "clock_getres",
};
#define NNAMES (sizeof names / sizeof names[0])
static void *fn[NNAMES];
static getrandom_fn vgetrandom;

static size_t vdso_size(uintptr_t base) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    size_t size = 0;
    while (maps && fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        if (strstr(line, "[vdso]") && sscanf(line, "%lx-%lx", &lo, &hi) == 2 && lo == base)
            size = hi - lo;
    }
    if (maps) fclose(maps);
    return size;
}

/* The address of exported function `name` in the ELF image loaded at `base`. */
static void *lookup(uintptr_t base, const char *name) {
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)base;
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(base + eh->e_phoff);
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(base + eh->e_shoff);
    intptr_t bias = -1;
    for (int i = 0; i < eh->e_phnum && bias == -1; i++)
        if (ph[i].p_type == PT_LOAD) bias = ph[i].p_vaddr - ph[i].p_offset;
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_DYNSYM) continue;
        const Elf64_Sym *sym = (const Elf64_Sym *)(base + sh[i].sh_offset);
        const char *str = (const char *)(base + sh[sh[i].sh_link].sh_offset);
        for (size_t j = 0; j < sh[i].sh_size / sizeof *sym; j++)
            if (ELF64_ST_TYPE(sym[j].st_info) == STT_FUNC && ELF64_ST_BIND(sym[j].st_info) != STB_LOCAL
                && sym[j].st_shndx != SHN_UNDEF && strcmp(str + sym[j].st_name, name) == 0)
                return (void *)(base + sym[j].st_value - bias);
    }
    return NULL;
}

static long long ns(const struct timespec *t) { return t->tv_sec * 1000000000LL + t->tv_nsec; }

static void sys_gettime(clockid_t clock, struct timespec *t) { syscall(SYS_clock_gettime, clock, t); }

static void check_gettime(gettime_fn f, const char *name, clockid_t clock) {
    struct timespec before, got, after;
    sys_gettime(clock, &before);
    if (f(clock, &got) != 0) ckpt_fail("%s(%d) failed", name, clock);
    sys_gettime(clock, &after);
    if (ns(&got) < ns(&before) || ns(&got) > ns(&after))
        ckpt_fail("%s(%d) = %lld, not between the system call's %lld and %lld", name, clock,
                  ns(&got), ns(&before), ns(&after));
}

int main(int argc, char **argv) {
    ckpt_init(argc, argv);
    if (argc < 3) ckpt_fail("usage: vdso_foreign FOREIGN_VDSO STATUS");
    uintptr_t base = getauxval(AT_SYSINFO_EHDR);
    size_t size = base ? vdso_size(base) : 0;
    if (!size) ckpt_fail("no vdso");
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) ckpt_fail("cannot open %s", argv[1]);
    if ((size_t)st.st_size > size) ckpt_fail("foreign vdso of %ld bytes, ours has %zu", (long)st.st_size, size);
    if (mprotect((void *)base, size, PROT_READ | PROT_WRITE) != 0) ckpt_fail("mprotect vdso: %m");
    memset((void *)base, 0, size);
    if (read(fd, (void *)base, st.st_size) != st.st_size) ckpt_fail("short read of %s", argv[1]);
    close(fd);
    if (mprotect((void *)base, size, PROT_READ | PROT_EXEC) != 0) ckpt_fail("mprotect vdso back: %m");
    for (size_t i = 0; i < NNAMES; i++)
        if (!(fn[i] = lookup(base, names[i]))) ckpt_fail("foreign vdso lacks %s", names[i]);
    vgetrandom = (getrandom_fn)lookup(base, "__vdso_getrandom");
    ckpt_status("info getrandom %d", vgetrandom != NULL);
    ckpt_ready();
    while (!ckpt_verify_requested) pause();

    for (int i = 0; i < 2; i++) {
        gettime_fn f = (gettime_fn)fn[i];
        check_gettime(f, names[i], CLOCK_REALTIME);
        check_gettime(f, names[i], CLOCK_MONOTONIC);
        check_gettime(f, names[i], CLOCK_BOOTTIME);
    }
    for (int i = 2; i < 4; i++) {
        struct timespec before, after;
        struct timeval tv;
        sys_gettime(CLOCK_REALTIME, &before);
        if (((gettimeofday_fn)fn[i])(&tv, NULL) != 0) ckpt_fail("%s failed", names[i]);
        sys_gettime(CLOCK_REALTIME, &after);
        long long us = tv.tv_sec * 1000000LL + tv.tv_usec;
        if (us < ns(&before) / 1000 || us > ns(&after) / 1000)
            ckpt_fail("%s = %lld us, not between %lld and %lld", names[i], us, ns(&before) / 1000,
                      ns(&after) / 1000);
    }
    for (int i = 4; i < 6; i++) {
        struct timespec before, after;
        time_t stored = 0;
        sys_gettime(CLOCK_REALTIME, &before);
        time_t t = ((time_fn)fn[i])(&stored);
        sys_gettime(CLOCK_REALTIME, &after);
        if (t != stored || t < before.tv_sec || t > after.tv_sec)
            ckpt_fail("%s = %ld (stored %ld), not between %ld and %ld", names[i], (long)t,
                      (long)stored, (long)before.tv_sec, (long)after.tv_sec);
    }
    unsigned here, node;
    if (syscall(SYS_getcpu, &here, &node, NULL) != 0) ckpt_fail("getcpu system call: %m");
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(here, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) ckpt_fail("sched_setaffinity: %m");
    for (int i = 6; i < 8; i++) {
        unsigned cpu = ~0u, got_node = ~0u;
        if (((getcpu_fn)fn[i])(&cpu, &got_node, NULL) != 0) ckpt_fail("%s failed", names[i]);
        if (cpu != here || got_node != node)
            ckpt_fail("%s = cpu %u node %u, pinned to cpu %u node %u", names[i], cpu, got_node, here, node);
    }
    for (int i = 8; i < 10; i++) {
        struct timespec res, want;
        syscall(SYS_clock_getres, CLOCK_MONOTONIC, &want);
        if (((gettime_fn)fn[i])(CLOCK_MONOTONIC, &res) != 0 || ns(&res) != ns(&want))
            ckpt_fail("%s = %lld ns, the system call says %lld", names[i], ns(&res), ns(&want));
    }
    if (vgetrandom) {
        struct getrandom_params params;
        if (vgetrandom(NULL, 0, 0, &params, ~0UL) != 0) ckpt_fail("getrandom parameters failed");
        void *state = mmap(NULL, params.size_of_opaque_state, params.mmap_prot, params.mmap_flags, -1, 0);
        if (state == MAP_FAILED) ckpt_fail("mapping a getrandom state: %m");
        unsigned char bytes[64] = {0}, none[64] = {0};
        ssize_t n = vgetrandom(bytes, sizeof bytes, 0, state, params.size_of_opaque_state);
        if (n != sizeof bytes || memcmp(bytes, none, sizeof bytes) == 0)
            ckpt_fail("getrandom through the vdso gave %zd bytes", n);
    }
    ckpt_pass();
}
