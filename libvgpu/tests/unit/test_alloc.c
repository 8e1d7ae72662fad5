#include "alloc.h"
#include "check.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

/* enough live records that every shard's table passes 2 MiB (the huge-page path) */
#define N 1200000

static void *worker(void *arg)
{
    uint64_t base = (uint64_t)(uintptr_t)arg << 40;
    for (int round = 0; round < 10000; round++) {
        uint64_t key = base + (uint64_t)round * 256 + 0x7f0000000000ULL;
        struct vgpu_alloc_rec r = {(uint64_t)round + 1, 0, VGPU_KIND_MEM}, old;
        bool rep;
        if (!vgpu_alloc_insert(key, r, &rep, &old) || rep)
            __atomic_fetch_add(&check_failures, 1, __ATOMIC_RELAXED);
        struct vgpu_alloc_rec out;
        if (!vgpu_alloc_remove(key, VGPU_KIND_MEM, &out) || out.size != (uint64_t)round + 1)
            __atomic_fetch_add(&check_failures, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

int main(void)
{
    struct vgpu_alloc_rec r, out, old;
    bool rep;
    /* many live records, lookups and removals in a scrambled order */
    for (uint64_t i = 1; i <= N; i++) {
        r = (struct vgpu_alloc_rec){i * 3, (int16_t)(i % 16), VGPU_KIND_MEM};
        CHECK(vgpu_alloc_insert(i * 4096, r, &rep, &old) && !rep);
    }
    CHECK_EQ_U64(vgpu_alloc_count(), N);
    /* a forked child starts with an empty table that works (its device memory is not inherited) */
    pid_t pid = fork();
    if (pid == 0) {
        vgpu_alloc_atfork_child();
        r = (struct vgpu_alloc_rec){1, 0, VGPU_KIND_MEM};
        bool ok = vgpu_alloc_count() == 0 && vgpu_alloc_insert(4096, r, &rep, &old) && !rep &&
                  vgpu_alloc_count() == 1;
        _exit(ok ? 0 : 1);
    }
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* handles of another kind with the same numeric value do not collide */
    r = (struct vgpu_alloc_rec){5, 1, VGPU_KIND_VMM};
    CHECK(vgpu_alloc_insert(4096, r, &rep, &old) && !rep);
    CHECK(vgpu_alloc_remove(4096, VGPU_KIND_VMM, &out) && out.size == 5);
    for (uint64_t i = 1; i <= N; i += 2)
        CHECK(vgpu_alloc_remove(i * 4096, VGPU_KIND_MEM, &out) && out.size == i * 3);
    for (uint64_t i = 1; i <= N; i += 2)
        CHECK(!vgpu_alloc_remove(i * 4096, VGPU_KIND_MEM, &out));
    for (uint64_t i = 2; i <= N; i += 2)
        CHECK(vgpu_alloc_remove(i * 4096, VGPU_KIND_MEM, &out) && out.size == i * 3 &&
              out.didx == (int16_t)(i % 16));
    CHECK_EQ_U64(vgpu_alloc_count(), 0);
    /* every field survives the 16-byte packing, at its limits */
    r = (struct vgpu_alloc_rec){(UINT64_C(1) << 56) - 1, 15, VGPU_KIND_MIPMAP};
    CHECK(vgpu_alloc_insert(8192, r, &rep, &old) && !rep);
    CHECK(vgpu_alloc_remove(8192, VGPU_KIND_MIPMAP, &out) && out.size == r.size && out.didx == 15 &&
          out.kind == VGPU_KIND_MIPMAP);
    /* a size the entry cannot hold is refused, not truncated */
    r = (struct vgpu_alloc_rec){UINT64_C(1) << 56, 0, VGPU_KIND_MEM};
    CHECK(!vgpu_alloc_insert(8192, r, &rep, &old));
    CHECK(!vgpu_alloc_remove(8192, VGPU_KIND_MEM, &out));
    /* replacement reports the old record */
    r = (struct vgpu_alloc_rec){10, 2, VGPU_KIND_MEM};
    CHECK(vgpu_alloc_insert(77, r, &rep, &old) && !rep);
    r.size = 20;
    CHECK(vgpu_alloc_insert(77, r, &rep, &old) && rep && old.size == 10);
    CHECK(vgpu_alloc_remove(77, VGPU_KIND_MEM, &out) && out.size == 20);
    /* 16 threads x 10,000 insert/remove end empty */
    pthread_t t[16];
    for (uintptr_t i = 0; i < 16; i++)
        pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    for (int i = 0; i < 16; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ_U64(vgpu_alloc_count(), 0);
    vgpu_alloc_reset();
    CHECK_DONE();
}
