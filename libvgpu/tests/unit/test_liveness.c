/* Region liveness when the lock query fails (issue 18, seen item 5): the fallback judged a slot
 * dead with kill(pid, 0) in the caller's PID namespace and a start time that was always 0, so a
 * live sibling of another container (its pid means nothing here) was reclaimed and the claim could
 * use its memory twice.  An unprovable slot must stay alive.
 *
 * fcntl is interposed (this executable's definition wins over libc's for the linked modules) so
 * F_OFD_GETLK / F_GETLK can be made to fail as on a file system without lock queries. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"
#include "config.h"
#include "region.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MI (1024ULL * 1024)

static volatile int g_fail_getlk;

int fcntl(int fd, int cmd, ...)
{
    static int (*real)(int, int, ...);
    if (real == NULL)
        real = (int (*)(int, int, ...))dlsym(RTLD_NEXT, "fcntl");
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (g_fail_getlk && (cmd == F_OFD_GETLK || cmd == F_GETLK)) {
        errno = ENOLCK;
        return -1;
    }
    return real(fd, cmd, arg);
}

int main(void)
{
    char path[] = "/tmp/vgpu-liveness-test-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    unlink(path);
    setenv("CUDA_DEVICE_MEMORY_SHARED_CACHE", path, 1);

    struct vgpu_region *r = vgpu_region_get();
    CHECK(r != NULL);
    int d = vgpu_region_device_index("GPU-live-0");
    CHECK(d == 0);
    const uint64_t limit = 100 * MI;

    /* a live sibling holding 60 MiB */
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    pid_t sib = fork();
    if (sib == 0) {
        CHECK(vgpu_region_charge(d, 60 * MI, true, limit));
        char c = 'x';
        CHECK(write(pfd[1], &c, 1) == 1);
        for (;;)
            pause();
    }
    char c;
    CHECK(read(pfd[0], &c, 1) == 1);
    CHECK_EQ_U64(vgpu_region_used(d), 60 * MI);

    /* As seen from another PID namespace: its pid does not exist here (and no start time). */
    int slot = -1;
    for (int i = 0; i < VGPU_REGION_MAX_PROCS; i++)
        if (r->proc[i].pid == sib)
            slot = i;
    CHECK(slot >= 0);
    if (slot >= 0)
        r->proc[slot].pid = 0x3ffffff0; /* above pid_max: kill() says ESRCH */
    CHECK(kill(0x3ffffff0, 0) < 0 && errno == ESRCH);

    g_fail_getlk = 1;
    CHECK(vgpu_region_reclaim_dead() == 0);            /* unprovable: alive */
    CHECK(!vgpu_region_charge(d, 60 * MI, true, limit)); /* the sibling's 60 MiB still count */
    CHECK_EQ_U64(vgpu_region_used(d), 60 * MI);
    g_fail_getlk = 0;

    /* once its death is provable (its liveness byte is free), it is reclaimed */
    kill(sib, SIGKILL);
    waitpid(sib, NULL, 0);
    CHECK(vgpu_region_reclaim_dead() == 1);
    CHECK_EQ_U64(vgpu_region_used(d), 0);
    CHECK(vgpu_region_charge(d, 60 * MI, true, limit));
    vgpu_region_uncharge(d, 60 * MI);

    unlink(path);
    CHECK_DONE();
}
