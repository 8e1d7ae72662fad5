#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "alloc.h"
#include "cpu.h"

#include <linux/futex.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/mman.h>

#define NSHARDS 16
#define MIN_CAP 64

/* 16 bytes, four to a cache line: at a million live allocations each insert lands on a cold line
 * of the table, so its footprint is what the alloc/free pair pays for. */
struct entry {
    uint64_t key;  /* 0 = empty (key 0 is never stored: NULL pointers are not tracked) */
    uint64_t meta; /* size (low 56 bits) | didx (5 bits) | kind (top 3 bits) */
};

#define SIZE_BITS 56
#define SIZE_MASK ((UINT64_C(1) << SIZE_BITS) - 1)

static inline uint64_t pack(struct vgpu_alloc_rec r)
{
    return r.size | ((uint64_t)(r.didx & 31) << SIZE_BITS) | ((uint64_t)(r.kind & 7) << 61);
}

static inline struct vgpu_alloc_rec unpack(uint64_t m)
{
    return (struct vgpu_alloc_rec){m & SIZE_MASK, (int16_t)((m >> SIZE_BITS) & 31), (uint8_t)(m >> 61)};
}

/* Shard lock: a private futex lock (0 free, 1 held, 2 held with waiters; Drepper's "mutex 3").
 * Inline, one atomic each way when uncontended: the table is on every alloc/free, and a
 * pthread mutex costs two library calls and their type dispatch there. */
typedef atomic_int shard_lock;

static void lock_slow(shard_lock *l, int c)
{
    for (int spin = 0; spin < 64 && c == 1; spin++) {
        cpu_relax();
        c = atomic_load_explicit(l, memory_order_relaxed);
        if (c == 0) {
            if (atomic_compare_exchange_weak_explicit(l, &c, 1, memory_order_acquire, memory_order_relaxed))
                return;
        }
    }
    if (c != 2)
        c = atomic_exchange_explicit(l, 2, memory_order_acquire);
    while (c != 0) {
        syscall(SYS_futex, l, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
        c = atomic_exchange_explicit(l, 2, memory_order_acquire);
    }
}

static inline void lock(shard_lock *l)
{
    int c = 0;
    if (__builtin_expect(!atomic_compare_exchange_strong_explicit(l, &c, 1, memory_order_acquire,
                                                                   memory_order_relaxed),
                         0))
        lock_slow(l, c);
}

static inline void unlock(shard_lock *l)
{
    if (__builtin_expect(atomic_exchange_explicit(l, 0, memory_order_release) == 2, 0))
        syscall(SYS_futex, l, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

struct shard {
    shard_lock mu;
    struct entry *tab;
    uint64_t cap; /* power of two or 0 */
    uint64_t n;
    char pad[64];
};

static struct shard g_shards[NSHARDS] = {
#define S 0, NULL, 0, 0, {0}
    [0 ... NSHARDS - 1] = {S},
#undef S
};

static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* Key space of the table: kind in the top 3 bits so pointers and handles never collide. */
static inline uint64_t tkey(uint64_t key, uint8_t kind)
{
    uint64_t group = (kind == VGPU_KIND_MEM) ? 0 : kind;
    return (key ^ (group << 61)) | ((key == 0 && group == 0) ? 1 : 0);
}

#define HUGE_PAGE (UINT64_C(2) << 20)

/* Tables of 2 MiB and more are mapped on their own, 2 MiB aligned, and offered to transparent
 * huge pages: at a million live allocations every insert lands on a random line of a 32 MiB table,
 * and with 4 KiB pages each of those is also a TLB miss and a page walk. */
static struct entry *table_alloc(uint64_t cap)
{
    uint64_t bytes = cap * sizeof(struct entry);
    if (bytes < HUGE_PAGE)
        return calloc(cap, sizeof(struct entry));
    char *p = mmap(NULL, bytes + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    uint64_t head = (HUGE_PAGE - ((uintptr_t)p & (HUGE_PAGE - 1))) & (HUGE_PAGE - 1);
    if (head > 0)
        munmap(p, head);
    munmap(p + head + bytes, HUGE_PAGE - head);
    madvise(p + head, bytes, MADV_HUGEPAGE); /* advice only: 4 KiB pages work the same */
    return (struct entry *)(p + head);
}

static void table_free(struct entry *t, uint64_t cap)
{
    if (cap * sizeof(struct entry) < HUGE_PAGE)
        free(t);
    else
        munmap(t, cap * sizeof(struct entry));
}

static bool grow(struct shard *s)
{
    uint64_t ncap = s->cap ? s->cap * 2 : MIN_CAP;
    struct entry *nt = table_alloc(ncap);
    if (nt == NULL)
        return false;
    for (uint64_t i = 0; i < s->cap; i++) {
        struct entry *e = &s->tab[i];
        if (e->key == 0)
            continue;
        uint64_t j = mix(e->key) & (ncap - 1);
        while (nt[j].key != 0)
            j = (j + 1) & (ncap - 1);
        nt[j] = *e;
    }
    table_free(s->tab, s->cap);
    s->tab = nt;
    s->cap = ncap;
    return true;
}

static inline struct shard *shard_of(uint64_t h)
{
    return &g_shards[h >> 60];
}

bool vgpu_alloc_insert(uint64_t key, struct vgpu_alloc_rec rec, bool *replaced,
                       struct vgpu_alloc_rec *old)
{
    if (rec.size > SIZE_MASK || rec.didx < 0 || rec.didx > 31 || rec.kind > 7)
        return false; /* no GPU holds 64 PiB: refuse rather than store a truncated charge */
    uint64_t k = tkey(key, rec.kind);
    uint64_t h = mix(k);
    struct shard *s = shard_of(h);
    *replaced = false;
    lock(&s->mu);
    if ((s->n + 1) * 2 > s->cap && !grow(s)) {
        unlock(&s->mu);
        return false;
    }
    uint64_t j = h & (s->cap - 1);
    while (s->tab[j].key != 0 && s->tab[j].key != k)
        j = (j + 1) & (s->cap - 1);
    struct entry *e = &s->tab[j];
    if (e->key == k) {
        *replaced = true;
        *old = unpack(e->meta);
    } else {
        s->n++;
    }
    e->key = k;
    e->meta = pack(rec);
    unlock(&s->mu);
    return true;
}

bool vgpu_alloc_remove(uint64_t key, uint8_t kind, struct vgpu_alloc_rec *out)
{
    uint64_t k = tkey(key, kind);
    uint64_t h = mix(k);
    struct shard *s = shard_of(h);
    lock(&s->mu);
    if (s->cap == 0) {
        unlock(&s->mu);
        return false;
    }
    uint64_t mask = s->cap - 1;
    uint64_t j = h & mask;
    while (s->tab[j].key != 0 && s->tab[j].key != k)
        j = (j + 1) & mask;
    if (s->tab[j].key == 0) {
        unlock(&s->mu);
        return false;
    }
    *out = unpack(s->tab[j].meta);
    /* backward-shift deletion keeps probe chains intact without tombstones */
    uint64_t hole = j;
    uint64_t i = (j + 1) & mask;
    while (s->tab[i].key != 0) {
        uint64_t home = mix(s->tab[i].key) & mask;
        /* move entry i into the hole if its home is not in (hole, i] cyclically */
        bool between = (hole <= i) ? (home > hole && home <= i) : (home > hole || home <= i);
        if (!between) {
            s->tab[hole] = s->tab[i];
            hole = i;
        }
        i = (i + 1) & mask;
    }
    memset(&s->tab[hole], 0, sizeof s->tab[hole]);
    s->n--;
    unlock(&s->mu);
    return true;
}

uint64_t vgpu_alloc_count(void)
{
    uint64_t n = 0;
    for (int i = 0; i < NSHARDS; i++) {
        lock(&g_shards[i].mu);
        n += g_shards[i].n;
        unlock(&g_shards[i].mu);
    }
    return n;
}

static void reset_shard(struct shard *s)
{
    table_free(s->tab, s->cap);
    s->tab = NULL;
    s->cap = 0;
    s->n = 0;
}

void vgpu_alloc_reset(void)
{
    for (int i = 0; i < NSHARDS; i++) {
        lock(&g_shards[i].mu);
        reset_shard(&g_shards[i]);
        unlock(&g_shards[i].mu);
    }
}

void vgpu_alloc_atfork_prepare(void)
{
    for (int i = 0; i < NSHARDS; i++)
        lock(&g_shards[i].mu);
}

void vgpu_alloc_atfork_parent(void)
{
    for (int i = NSHARDS - 1; i >= 0; i--)
        unlock(&g_shards[i].mu);
}

void vgpu_alloc_atfork_child(void)
{
    /* Device memory does not survive into the child: forget the parent's records. */
    for (int i = 0; i < NSHARDS; i++) {
        atomic_store_explicit(&g_shards[i].mu, 0, memory_order_relaxed);
        reset_shard(&g_shards[i]);
    }
}
