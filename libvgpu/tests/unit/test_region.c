/* Shared region: exact charge/uncharge, multi-process races near the limit, kill -9 of a
 * process holding memory, kill -9 of a process holding the device lock. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"
#include "config.h"
#include "region.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MI (1024ULL * 1024)

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void wait_all(pid_t *pids, int n)
{
    for (int i = 0; i < n; i++) {
        int st;
        waitpid(pids[i], &st, 0);
    }
}

int main(void)
{
    char path[] = "/tmp/vgpu-region-test-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    unlink(path); /* let the library create it */
    setenv("CUDA_DEVICE_MEMORY_SHARED_CACHE", path, 1);

    struct vgpu_region *r = vgpu_region_get();
    CHECK(r != NULL && r->h.magic == VGPU_REGION_MAGIC && r->h.version == VGPU_REGION_VERSION);
    int d = vgpu_region_device_index("GPU-test-0");
    CHECK(d == 0);
    CHECK(vgpu_region_device_index("gpu-TEST-0") == 0);
    CHECK(vgpu_region_device_index("GPU-test-1") == 1);
    CHECK(vgpu_region_device_find("GPU-none") == -1);

    /* exact accounting, == limit allowed, limit + 1 refused */
    const uint64_t limit = 64 * MI;
    CHECK(vgpu_region_charge(d, limit - 1, true, limit));
    CHECK(vgpu_region_charge(d, 1, true, limit));
    CHECK(!vgpu_region_charge(d, 1, true, limit));
    CHECK_EQ_U64(vgpu_region_used(d), limit);
    vgpu_region_uncharge(d, limit);
    CHECK_EQ_U64(vgpu_region_used(d), 0);
    CHECK(!vgpu_region_charge(d, UINT64_MAX, true, limit));
    CHECK(!vgpu_region_charge(d, 1, true, 0)); /* limit 0 refuses everything */
    CHECK(vgpu_region_charge(d, 5 * limit, false, 0)); /* no limit: counted, never refused */
    vgpu_region_uncharge(d, 5 * limit);

    /* 8 processes race 1 MiB charges up to the limit: the sum of what they got is exactly the
     * limit, never more. */
    atomic_store(&r->dev[d].peak, 0);
    uint64_t *got = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    volatile int *go = (volatile int *)(got + 64);
    pid_t pids[8];
    for (int i = 0; i < 8; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            while (!*go)
                ;
            uint64_t n = 0;
            while (vgpu_region_charge(d, MI, true, limit))
                n++;
            got[i] = n;
            /* peak check from inside: total never above the limit */
            if (vgpu_region_used(d) > limit)
                got[32 + i] = 1;
            usleep(100000); /* hold while the others finish */
            _exit(0);        /* no atexit: slot stays until reclaimed */
        }
    }
    *go = 1;
    wait_all(pids, 8);
    uint64_t sum = 0;
    for (int i = 0; i < 8; i++) {
        sum += got[i];
        CHECK(got[32 + i] == 0);
    }
    CHECK_EQ_U64(sum * MI, limit);
    CHECK(atomic_load(&r->dev[d].peak) <= limit);
    /* the children died without cleanup (_exit): their usage is reclaimed */
    CHECK_EQ_U64(vgpu_region_used(d), limit);
    CHECK(vgpu_region_reclaim_dead() == 8);
    CHECK_EQ_U64(vgpu_region_used(d), 0);

    /* normal exit releases the slot through atexit */
    pid_t p = fork();
    if (p == 0) {
        vgpu_region_charge(d, 3 * MI, true, limit);
        exit(0);
    }
    wait_all(&p, 1);
    CHECK_EQ_U64(vgpu_region_used(d), 0);

    /* kill -9 of a process holding memory: a new charge that needs it succeeds */
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    p = fork();
    if (p == 0) {
        vgpu_region_charge(d, 60 * MI, true, limit);
        CHECK(write(pfd[1], "x", 1) == 1);
        for (;;)
            pause();
    }
    char c;
    CHECK(read(pfd[0], &c, 1) == 1);
    CHECK_EQ_U64(vgpu_region_used(d), 60 * MI);
    kill(p, SIGKILL);
    wait_all(&p, 1);
    CHECK(!vgpu_region_charge(d, 10 * MI, true, limit)); /* charge alone does not reclaim */
    CHECK(vgpu_region_reclaim_dead() == 1);
    CHECK(vgpu_region_charge(d, 10 * MI, true, limit));
    vgpu_region_uncharge(d, 10 * MI);

    /* kill -9 while holding the device lock (inside a charge): others recover at once */
    CHECK(vgpu_region_charge(d, 2 * MI, true, limit));
    p = fork();
    if (p == 0) {
        ((struct vgpu_config *)vgpu_config_get())->test_stall_in_lock = true;
        vgpu_region_charge(d, 5 * MI, true, limit);
        _exit(0);
    }
    uint64_t t0 = now_ms();
    while (vgpu_region_used(d) != 7 * MI && now_ms() - t0 < 5000)
        usleep(1000);
    CHECK_EQ_U64(vgpu_region_used(d), 7 * MI); /* the child is inside the lock */
    kill(p, SIGKILL);
    wait_all(&p, 1);
    t0 = now_ms();
    CHECK(vgpu_region_charge(d, MI, true, limit));
    CHECK(now_ms() - t0 < 1000);
    /* total recomputed from the slots: the half-done 5 MiB is gone */
    CHECK_EQ_U64(vgpu_region_used(d), 3 * MI);
    vgpu_region_uncharge(d, 3 * MI);
    CHECK_EQ_U64(vgpu_region_used(d), 0);

    /* a process already asleep on the device lock when its holder is killed takes it over */
    p = fork();
    if (p == 0) {
        ((struct vgpu_config *)vgpu_config_get())->test_stall_in_lock = true;
        vgpu_region_charge(d, 5 * MI, true, limit);
        _exit(0);
    }
    t0 = now_ms();
    while (vgpu_region_used(d) != 5 * MI && now_ms() - t0 < 5000)
        usleep(1000);
    CHECK_EQ_U64(vgpu_region_used(d), 5 * MI);
    pid_t waiter = fork();
    if (waiter == 0) {
        uint64_t w0 = now_ms();
        bool ok = vgpu_region_charge(d, MI, true, limit);
        bool fast = now_ms() - w0 < 5000;
        exit(ok && fast ? 0 : 1); /* exit (not _exit): its slot is released at exit */
    }
    usleep(100 * 1000); /* the waiter is asleep on the lock by now */
    CHECK_EQ_U64(vgpu_region_used(d), 5 * MI);
    kill(p, SIGKILL);
    wait_all(&p, 1);
    int wst = 0;
    CHECK(waitpid(waiter, &wst, 0) == waiter && WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    CHECK_EQ_U64(vgpu_region_used(d), 0); /* dead half-charge recomputed away, waiter's released */

    /* kill -9 while holding the slots lock (registration, release, device records): the next
     * process that needs it recovers the robust mutex at once and the dead slot's charge goes */
    vgpu_region_reclaim_dead(); /* the slots of the processes killed above */
    int ready[2];
    CHECK(pipe(ready) == 0);
    p = fork();
    if (p == 0) {
        bool ok = vgpu_region_charge(d, 3 * MI, true, limit);
        pthread_mutex_lock(&vgpu_region_get()->h.slots_lock.m);
        char c = ok ? 'y' : 'n';
        ssize_t w = write(ready[1], &c, 1);
        (void)w;
        for (;;)
            pause();
    }
    char answer = 0;
    CHECK(read(ready[0], &answer, 1) == 1 && answer == 'y');
    close(ready[0]);
    close(ready[1]);
    CHECK_EQ_U64(vgpu_region_used(d), 3 * MI);
    kill(p, SIGKILL);
    wait_all(&p, 1);
    t0 = now_ms();
    CHECK(vgpu_region_reclaim_dead() == 1);
    CHECK(now_ms() - t0 < 1000);
    CHECK_EQ_U64(vgpu_region_used(d), 0);
    p = fork();
    if (p == 0) /* a new process registers a slot (slots lock) and charges */
        exit(vgpu_region_charge(d, MI, true, limit) ? 0 : 1);
    int st = 0;
    CHECK(waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 0);

    unlink(path);
    CHECK_DONE();
}
