#include "alloc.h"
#include "check.h"

#include <pthread.h>
#include <stdint.h>

#define N 200000

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
