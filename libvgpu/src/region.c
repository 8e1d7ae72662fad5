#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "region.h"
#include "cpu.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(pthread_mutex_t) <= 64, "pthread_mutex_t must fit its 64-byte slot");
_Static_assert(sizeof(struct vgpu_region_header) <= VGPU_REGION_HEADER_SIZE, "header size");
_Static_assert(sizeof(struct vgpu_region_device) == VGPU_REGION_DEVICE_SIZE, "device size");
_Static_assert(sizeof(struct vgpu_region_proc) == VGPU_REGION_PROC_SIZE, "proc size");
_Static_assert(offsetof(struct vgpu_region_header, slots_lock) == 64, "header layout");
_Static_assert(offsetof(struct vgpu_region_device, used) == 160, "device layout");
_Static_assert(offsetof(struct vgpu_region_device, util) == 192, "device layout");
_Static_assert(offsetof(struct vgpu_region_proc, used) == 24, "proc layout");
_Static_assert(offsetof(struct vgpu_region_proc, gen) == 152, "proc layout");
_Static_assert(offsetof(union vgpu_shared_mutex, word) == 0, "device lock word");
_Static_assert(offsetof(struct vgpu_region, dev) == VGPU_REGION_HEADER_SIZE, "region layout");
_Static_assert(offsetof(struct vgpu_region, proc) ==
                   VGPU_REGION_HEADER_SIZE + VGPU_MAX_DEVICES * VGPU_REGION_DEVICE_SIZE,
               "region layout");

void vgpu_atfork_install(void);

static pthread_mutex_t g_attach_mu = PTHREAD_MUTEX_INITIALIZER;
static struct vgpu_region *_Atomic g_region;
static bool g_private;
static int g_fd = -1;
static bool g_have_ofd = true;
static struct vgpu_region_proc *_Atomic g_slot;
static int g_slot_idx = -1;
static pid_t g_slot_pid;
static _Atomic bool g_exiting;
static bool g_atexit_done;
static bool g_test_stall; /* VGPU_TEST_STALL_IN_LOCK, read once at attach (not per charge) */

static off_t slot_offset(int i)
{
    return (off_t)(offsetof(struct vgpu_region, proc) + (size_t)i * sizeof(struct vgpu_region_proc));
}

/* ---- file locks ------------------------------------------------------------------------ */

static int lock_range(int fd, int cmd, short type, off_t start, off_t len)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    int rc;
    do {
        rc = fcntl(fd, cmd, &fl);
    } while (rc < 0 && errno == EINTR);
    return rc;
}

static int init_lock(int fd, short type)
{
    if (g_have_ofd) {
        int rc = lock_range(fd, F_OFD_SETLKW, type, 0, 1);
        if (rc == 0 || errno != EINVAL)
            return rc;
        g_have_ofd = false;
        vgpu_warn("open file description locks are not supported here; using process locks");
    }
    return lock_range(fd, F_SETLKW, type, 0, 1);
}

/* True when another open file description holds a lock on [start, start+len). */
static int range_locked_by_other(int fd, off_t start, off_t len)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    if (fcntl(fd, g_have_ofd ? F_OFD_GETLK : F_GETLK, &fl) < 0)
        return -1;
    return fl.l_type != F_UNLCK;
}

/* ---- robust mutexes ---------------------------------------------------------------------- */

static void init_shared_mutex(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
}

static void recompute_device(struct vgpu_region *r, int d)
{
    uint32_t hi = atomic_load(&r->h.proc_high);
    if (hi > VGPU_REGION_MAX_PROCS)
        hi = VGPU_REGION_MAX_PROCS;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < hi; i++)
        sum += atomic_load(&r->proc[i].used[d]);
    atomic_store(&r->dev[d].used, sum);
}

/* ---- device locks ------------------------------------------------------------------------
 * A device record's lock is one 32-bit word in the shared file: 0 = free, else the holder's tag
 * plus LOCK_WAITERS when somebody sleeps on it (futex).  Uncontended it costs one CAS to take and
 * one exchange to release, inline (a glibc robust mutex costs two library calls each way and the
 * robust-list bookkeeping: it was most of the interception cost of an alloc/free pair).
 *
 * Robustness without the kernel's robust list: the tag says who holds the lock, and a waiter
 * checks every WAIT_NS that the holder is alive.
 *   - slot tag (slot index + 1, and the slot's registration generation): taken by a process
 *     with a slot; it is alive while its slot is ACTIVE with that generation and its liveness
 *     byte is locked (the kernel drops that lock when the process dies, in any PID namespace).
 *   - TAG_SLOTS: taken while holding the slots lock (slot release and reclamation, possibly by a
 *     process without a slot); the holder is alive while the slots lock (a robust pthread mutex)
 *     is held by a live process, i.e. while pthread_mutex_trylock says EBUSY.
 * A waiter that finds the holder dead takes the lock over with a CAS from the word it saw and
 * rebuilds the device total from the slots, as the EOWNERDEAD path of a robust mutex would. */

#define LOCK_WAITERS 0x80000000u
#define TAG_SLOTS 0x7fffffffu
#define TAG_SLOT_BITS 11 /* slot index + 1 <= VGPU_REGION_MAX_PROCS */
#define TAG_GEN_MASK 0xfffffu /* 20 bits of generation */
#define WAIT_NS 2000000L /* liveness check period of a waiter */
_Static_assert(VGPU_REGION_MAX_PROCS < (1 << TAG_SLOT_BITS), "slot index must fit its tag field");

static uint32_t g_tag; /* this process's slot tag (0 = no slot) */

static uint32_t make_tag(int idx, uint32_t gen)
{
    return ((gen & TAG_GEN_MASK) << TAG_SLOT_BITS) | (uint32_t)(idx + 1);
}

static long futex(_Atomic uint32_t *w, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, (uint32_t *)w, op, val, ts, NULL, 0);
}

static bool holder_alive(struct vgpu_region *r, uint32_t word, bool under_slots)
{
    uint32_t tag = word & ~LOCK_WAITERS;
    if (tag == TAG_SLOTS) {
        if (under_slots)
            return false; /* we hold the slots lock: that tag is a dead holder's */
        int rc = pthread_mutex_trylock(&r->h.slots_lock.m);
        if (rc == EBUSY)
            return true;
        if (rc == EOWNERDEAD) {
            pthread_mutex_consistent(&r->h.slots_lock.m);
            vgpu_warn("region slots lock: previous holder died; recovered");
        }
        if (rc == 0 || rc == EOWNERDEAD)
            pthread_mutex_unlock(&r->h.slots_lock.m);
        return false;
    }
    uint32_t slot = tag & ((1u << TAG_SLOT_BITS) - 1);
    if (slot == 0 || slot > VGPU_REGION_MAX_PROCS)
        return false; /* not a tag we write */
    int i = (int)slot - 1;
    if (tag == g_tag && i == g_slot_idx)
        return true; /* another thread of this process */
    struct vgpu_region_proc *p = &r->proc[i];
    if (atomic_load_explicit(&p->state, memory_order_acquire) != VGPU_SLOT_ACTIVE ||
        (atomic_load_explicit(&p->gen, memory_order_acquire) & TAG_GEN_MASK) != tag >> TAG_SLOT_BITS)
        return false; /* released, or registered again by another process */
    if (g_private)
        return false; /* one process: a tag not ours is stale */
    return range_locked_by_other(g_fd, slot_offset(i), 1) != 0; /* unknown (-1): assume alive */
}

static void lock_device_slow(struct vgpu_region *r, int d, uint32_t tag, bool under_slots)
{
    _Atomic uint32_t *w = &r->dev[d].lock.word;
    for (int spin = 0; spin < 100; spin++) {
        uint32_t cur = atomic_load_explicit(w, memory_order_relaxed);
        if (cur == 0 && atomic_compare_exchange_weak_explicit(w, &cur, tag, memory_order_acquire,
                                                              memory_order_relaxed))
            return;
        cpu_relax();
    }
    struct timespec ts = {0, WAIT_NS};
    for (;;) {
        uint32_t cur = atomic_load_explicit(w, memory_order_relaxed);
        if (cur == 0) {
            /* others may sleep too: take it with the waiters bit so that unlock wakes one */
            if (atomic_compare_exchange_strong_explicit(w, &cur, tag | LOCK_WAITERS,
                                                        memory_order_acquire, memory_order_relaxed))
                return;
            continue;
        }
        if (!(cur & LOCK_WAITERS)) {
            uint32_t want = cur | LOCK_WAITERS;
            if (!atomic_compare_exchange_strong_explicit(w, &cur, want, memory_order_relaxed,
                                                         memory_order_relaxed))
                continue;
            cur = want;
        }
        long rc = futex(w, FUTEX_WAIT, cur, &ts);
        if (rc == 0 || errno != ETIMEDOUT)
            continue; /* woken, or the word changed: try again */
        if (holder_alive(r, cur, under_slots))
            continue;
        /* The holder died inside its critical section: take the lock over from exactly that word
         * (if it changed meanwhile, somebody else did or the holder was not dead after all). */
        if (!atomic_compare_exchange_strong_explicit(w, &cur, tag | LOCK_WAITERS, memory_order_acquire,
                                                     memory_order_relaxed))
            continue;
        /* every writer of these counters holds this lock: the slots are authoritative */
        recompute_device(r, d);
        vgpu_warn("device record %d: previous lock holder died; usage recomputed (%llu bytes)", d,
                  (unsigned long long)atomic_load(&r->dev[d].used));
        return;
    }
}

/* UNDER_SLOTS: the caller holds the slots lock (it then takes the lock as TAG_SLOTS). */
static inline void lock_device_as(struct vgpu_region *r, int d, bool under_slots)
{
    uint32_t tag = under_slots ? TAG_SLOTS : g_tag;
    uint32_t zero = 0;
    if (__builtin_expect(!atomic_compare_exchange_strong_explicit(&r->dev[d].lock.word, &zero, tag,
                                                                   memory_order_acquire,
                                                                   memory_order_relaxed),
                         0))
        lock_device_slow(r, d, tag, under_slots);
}

static inline void lock_device(struct vgpu_region *r, int d)
{
    lock_device_as(r, d, false);
}

static inline void unlock_device(struct vgpu_region *r, int d)
{
    _Atomic uint32_t *w = &r->dev[d].lock.word;
    if (__builtin_expect(atomic_exchange_explicit(w, 0, memory_order_release) & LOCK_WAITERS, 0))
        futex(w, FUTEX_WAKE, 1, NULL);
}

static void lock_slots(struct vgpu_region *r)
{
    int rc = pthread_mutex_lock(&r->h.slots_lock.m);
    if (rc == EOWNERDEAD) {
        pthread_mutex_consistent(&r->h.slots_lock.m);
        vgpu_warn("region slots lock: previous holder died; recovered");
    } else if (rc != 0) {
        vgpu_error("region slots lock failed: %s", strerror(rc));
    }
}

static void unlock_slots(struct vgpu_region *r)
{
    pthread_mutex_unlock(&r->h.slots_lock.m);
}

/* ---- creation ---------------------------------------------------------------------------- */

static void init_region(struct vgpu_region *r)
{
    r->h.version = VGPU_REGION_VERSION;
    r->h.header_size = VGPU_REGION_HEADER_SIZE;
    r->h.device_size = VGPU_REGION_DEVICE_SIZE;
    r->h.proc_size = VGPU_REGION_PROC_SIZE;
    r->h.max_devices = VGPU_MAX_DEVICES;
    r->h.max_procs = VGPU_REGION_MAX_PROCS;
    r->h.total_size = sizeof(struct vgpu_region);
    atomic_store(&r->h.util_switch, 1);
    atomic_store(&r->h.recent_kernel, 0);
    init_shared_mutex(&r->h.slots_lock.m);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        memset(&r->dev[d].lock, 0, sizeof r->dev[d].lock); /* a free device lock */
    __atomic_store_n(&r->h.magic, VGPU_REGION_MAGIC, __ATOMIC_RELEASE);
}

static struct vgpu_region *attach_private(void)
{
    void *p = mmap(NULL, sizeof(struct vgpu_region), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        vgpu_error("cannot map a private accounting region: %s", strerror(errno));
        return NULL;
    }
    init_region(p);
    g_private = true;
    return p;
}

static struct vgpu_region *attach_file(const char *path)
{
    const size_t size = sizeof(struct vgpu_region);
    /* The file lives in the claim's directory, which the claim's processes can write: a symlink
     * or a FIFO put there in its place is neither followed nor waited on, and nothing but a
     * regular file is truncated or chmodded. */
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0666);
    if (fd < 0) {
        vgpu_error("cannot open shared region %s: %s; limits apply to this process only", path,
                   strerror(errno));
        return NULL;
    }
    {
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
            vgpu_error("shared region %s is not a regular file; limits apply to this process only", path);
            close(fd);
            return NULL;
        }
    }
    /* Common case, an initialized region of this layout: checked without any lock (a header
     * read with pread cannot fault).  A region of this version is never rebuilt (only one whose
     * header is invalid, under the exclusive lock below), and its header is complete once the
     * magic, written last, is there; the mapping is taken only after that check. */
    {
        struct vgpu_region_header h;
        struct stat st;
        memset(&h, 0, sizeof h);
        if (fstat(fd, &st) == 0 && (size_t)st.st_size == size &&
            pread(fd, &h, offsetof(struct vgpu_region_header, slots_lock), 0) ==
                (ssize_t)offsetof(struct vgpu_region_header, slots_lock) &&
            h.magic == VGPU_REGION_MAGIC && h.version == VGPU_REGION_VERSION && h.total_size == size) {
            struct vgpu_region *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            /* pairs with the release store of the magic in init_region */
            if (p != MAP_FAILED && __atomic_load_n(&p->h.magic, __ATOMIC_ACQUIRE) == VGPU_REGION_MAGIC) {
                g_fd = fd;
                vgpu_debug("attached shared region %s", path);
                return p;
            }
            if (p != MAP_FAILED)
                munmap(p, size);
        }
    }
    /* Creation, rebuild or an error: exclusively (a shared lock is released first: two
     * upgrades would wait for each other). */
    if (init_lock(fd, F_WRLCK) < 0) {
        vgpu_error("cannot lock shared region %s: %s; limits apply to this process only", path,
                   strerror(errno));
        close(fd);
        return NULL;
    }
    struct vgpu_region *r = NULL;
    struct stat st;
    bool need_init = false;
    if (fstat(fd, &st) < 0)
        goto fail;
    if (st.st_size == 0) {
        need_init = true;
    } else {
        struct vgpu_region_header h;
        memset(&h, 0, sizeof h);
        ssize_t n = pread(fd, &h, sizeof h, 0);
        bool ok = n == (ssize_t)sizeof h && h.magic == VGPU_REGION_MAGIC &&
                  h.version == VGPU_REGION_VERSION && h.total_size == size &&
                  (size_t)st.st_size == size;
        if (!ok) {
            int busy = range_locked_by_other(fd, 1, 0);
            if (busy != 0) {
                vgpu_error("shared region %s has another layout (magic %#llx, version %u, %lld "
                           "bytes; expected version %u, %zu bytes) and is in use by other "
                           "processes; refusing it, limits apply to this process only",
                           path, (unsigned long long)h.magic, h.version, (long long)st.st_size,
                           VGPU_REGION_VERSION, size);
                goto fail;
            }
            if (h.magic != 0 || st.st_size != 0)
                vgpu_warn("shared region %s has another layout (magic %#llx, version %u, %lld "
                          "bytes; expected version %u, %zu bytes) and no user; rebuilding it",
                          path, (unsigned long long)h.magic, h.version, (long long)st.st_size,
                          VGPU_REGION_VERSION, size);
            need_init = true;
        }
    }
    if (need_init) {
        if (ftruncate(fd, 0) < 0)
            goto fail;
        int e = posix_fallocate(fd, 0, (off_t)size);
        if (e != 0 && e != EOPNOTSUPP && e != EINVAL) {
            errno = e;
            goto fail;
        }
        if (e != 0 && ftruncate(fd, (off_t)size) < 0)
            goto fail;
        (void)fchmod(fd, 0666);
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        goto fail;
    r = p;
    if (need_init)
        init_region(r);
    init_lock(fd, F_UNLCK);
    g_fd = fd;
    vgpu_debug("attached shared region %s%s", path, need_init ? " (initialized)" : "");
    return r;
fail:
    vgpu_error("cannot use shared region %s: %s; limits apply to this process only", path,
               strerror(errno));
    init_lock(fd, F_UNLCK);
    close(fd);
    return NULL;
}

struct vgpu_region *vgpu_region_get(void)
{
    struct vgpu_region *r = atomic_load_explicit(&g_region, memory_order_acquire);
    if (r != NULL)
        return r;
    vgpu_atfork_install();
    pthread_mutex_lock(&g_attach_mu);
    r = atomic_load_explicit(&g_region, memory_order_acquire);
    if (r == NULL) {
        const struct vgpu_config *cfg = vgpu_config_get();
        if (cfg->shared_cache != NULL)
            r = attach_file(cfg->shared_cache);
        else
            vgpu_info("CUDA_DEVICE_MEMORY_SHARED_CACHE not set; limits apply per process");
        if (r == NULL)
            r = attach_private();
        g_test_stall = cfg->test_stall_in_lock;
        atomic_store_explicit(&g_region, r, memory_order_release);
    }
    pthread_mutex_unlock(&g_attach_mu);
    return r;
}

/* ---- liveness ---------------------------------------------------------------------------- */

static bool slot_dead(struct vgpu_region *r, int i)
{
    if (i == g_slot_idx)
        return false;
    if (g_private)
        return true;
    /* Only an unlocked liveness byte proves a slot dead.  When the lock query fails the slot is
     * alive: kill(pid, 0) asks the caller's PID namespace (a sibling container's process is not
     * there) and start times were never recorded, so neither proves anything, and reclaiming a
     * live sibling's memory would let the claim exceed its limit. */
    (void)r;
    return range_locked_by_other(g_fd, slot_offset(i), 1) == 0;
}

/* Subtracts slot i's usage from the device totals and frees it.  Slots lock held. */
static void release_slot(struct vgpu_region *r, int i)
{
    struct vgpu_region_proc *s = &r->proc[i];
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        if (atomic_load(&s->used[d]) == 0)
            continue;
        lock_device_as(r, d, true);
        uint64_t u = atomic_load(&s->used[d]);
        uint64_t t = atomic_load(&r->dev[d].used);
        atomic_store(&r->dev[d].used, t >= u ? t - u : 0);
        atomic_store(&s->used[d], 0);
        unlock_device(r, d);
    }
    atomic_store_explicit(&s->state, VGPU_SLOT_FREE, memory_order_release);
}

static int reclaim_locked(struct vgpu_region *r)
{
    int n = 0;
    uint32_t hi = atomic_load(&r->h.proc_high);
    if (hi > VGPU_REGION_MAX_PROCS)
        hi = VGPU_REGION_MAX_PROCS;
    for (uint32_t i = 0; i < hi; i++) {
        if (atomic_load(&r->proc[i].state) != VGPU_SLOT_ACTIVE)
            continue;
        if (!slot_dead(r, (int)i))
            continue;
        vgpu_info("reclaiming slot %u of dead process %d", i, r->proc[i].pid);
        release_slot(r, (int)i);
        n++;
    }
    return n;
}

int vgpu_region_reclaim_dead(void)
{
    struct vgpu_region *r = vgpu_region_get();
    if (r == NULL)
        return 0;
    lock_slots(r);
    int n = reclaim_locked(r);
    unlock_slots(r);
    return n;
}

/* ---- registration ------------------------------------------------------------------------ */

static void release_own_slot_at_exit(void)
{
    struct vgpu_region *r = atomic_load(&g_region);
    struct vgpu_region_proc *s = atomic_load(&g_slot);
    if (r == NULL || s == NULL || g_slot_pid != getpid())
        return; /* e.g. a clone()d child that inherited our memory */
    atomic_store(&g_exiting, true);
    lock_slots(r);
    release_slot(r, g_slot_idx);
    unlock_slots(r);
}

/* Raises proc_high to at least N (lock-free). */
static void raise_proc_high(struct vgpu_region *r, uint32_t n)
{
    uint32_t hi = atomic_load(&r->h.proc_high);
    while (hi < n && !atomic_compare_exchange_weak(&r->h.proc_high, &hi, n))
        ;
}

/* Claims a free slot without the slots lock, so that processes starting together do not queue
 * behind each other.  The claim is the slot's liveness byte: the kernel gives a byte lock to one
 * open file description only, and the state is checked again under it (a slot can only become
 * FREE under the slots lock, by release_slot, and only become ACTIVE here, under its byte).
 * Returns the index with the byte held, or -1 when no slot is free. */
static int claim_free_slot(struct vgpu_region *r)
{
    for (int i = 0; i < VGPU_REGION_MAX_PROCS; i++) {
        if (atomic_load_explicit(&r->proc[i].state, memory_order_acquire) != VGPU_SLOT_FREE)
            continue;
        if (g_private)
            return i; /* one process; registration is serialised by g_attach_mu */
        int cmd = g_have_ofd ? F_OFD_SETLK : F_SETLK;
        if (lock_range(g_fd, cmd, F_WRLCK, slot_offset(i), 1) < 0)
            continue; /* somebody holds that byte: being claimed, or its owner is exiting */
        if (atomic_load_explicit(&r->proc[i].state, memory_order_acquire) == VGPU_SLOT_FREE)
            return i;
        /* claimed and (since) dead between our two looks: not free, leave it to reclamation */
        lock_range(g_fd, cmd, F_UNLCK, slot_offset(i), 1);
    }
    return -1;
}

static bool slot_holds_memory(const struct vgpu_region_proc *p)
{
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        if (atomic_load_explicit(&p->used[d], memory_order_relaxed) != 0)
            return true;
    return false;
}

/* Reclaims the dead slots that still hold memory; liveness is checked outside the slots lock
 * (one lock query per such slot) and again under it before a slot is released. */
static int reclaim_holding(struct vgpu_region *r)
{
    int n = 0;
    uint32_t hi = atomic_load(&r->h.proc_high);
    if (hi > VGPU_REGION_MAX_PROCS)
        hi = VGPU_REGION_MAX_PROCS;
    for (uint32_t i = 0; i < hi; i++) {
        if (atomic_load(&r->proc[i].state) != VGPU_SLOT_ACTIVE || !slot_holds_memory(&r->proc[i]) ||
            !slot_dead(r, (int)i))
            continue;
        lock_slots(r);
        if (atomic_load(&r->proc[i].state) == VGPU_SLOT_ACTIVE && slot_dead(r, (int)i)) {
            vgpu_info("reclaiming slot %u of dead process %d", i, r->proc[i].pid);
            release_slot(r, (int)i);
            n++;
        }
        unlock_slots(r);
    }
    return n;
}

struct vgpu_region_proc *vgpu_region_slot(void)
{
    struct vgpu_region_proc *s = atomic_load_explicit(&g_slot, memory_order_acquire);
    if (s != NULL)
        return s;
    struct vgpu_region *r = vgpu_region_get();
    if (r == NULL)
        return NULL;
    pthread_mutex_lock(&g_attach_mu);
    s = atomic_load(&g_slot);
    if (s != NULL) {
        pthread_mutex_unlock(&g_attach_mu);
        return s;
    }
    const struct vgpu_config *cfg = vgpu_config_get();
    pid_t pid = getpid();
    /* O(1) in the common case and no shared lock: dead slots are reclaimed lazily (those that
     * hold memory at the first memory report and when an allocation would fail, all of them
     * when the table is full). */
    int idx = claim_free_slot(r);
    if (idx < 0 && vgpu_region_reclaim_dead() > 0)
        idx = claim_free_slot(r);
    if (idx >= 0) {
        struct vgpu_region_proc *p = &r->proc[idx];
        for (int d = 0; d < VGPU_MAX_DEVICES; d++)
            atomic_store(&p->used[d], 0);
        p->pid = pid;
        p->host_pid = 0;
        p->priority = cfg->priority;
        /* Liveness is the slot's lock byte; the start time (PID reuse) only serves the fallback
         * for a failing lock query, and reading /proc/self/stat costs more than the rest of the
         * registration: it is left unknown (0). */
        p->start_time = 0;
        /* a new generation: device-lock tags of a dead previous owner of this slot are stale */
        uint32_t gen = atomic_fetch_add_explicit(&p->gen, 1, memory_order_acq_rel) + 1;
        g_tag = make_tag(idx, gen);
        /* visible to scans of [0, proc_high) before it can hold anything */
        raise_proc_high(r, (uint32_t)idx + 1);
        atomic_store_explicit(&p->state, VGPU_SLOT_ACTIVE, memory_order_release);
        g_slot_idx = idx;
        g_slot_pid = pid;
        s = p;
    }
    if (s == NULL) {
        vgpu_error("shared region is full (%d processes); allocations of this process are refused",
                   VGPU_REGION_MAX_PROCS);
    } else {
        if (!g_atexit_done) {
            g_atexit_done = true;
            atexit(release_own_slot_at_exit);
        }
        vgpu_debug("registered slot %d", idx);
        atomic_store_explicit(&g_slot, s, memory_order_release);
    }
    pthread_mutex_unlock(&g_attach_mu);
    return s;
}

/* ---- device records ---------------------------------------------------------------------- */

int vgpu_region_device_find(const char *uuid)
{
    struct vgpu_region *r = vgpu_region_get();
    if (r == NULL || uuid == NULL)
        return -1;
    uint32_t n = atomic_load_explicit(&r->h.device_count, memory_order_acquire);
    if (n > VGPU_MAX_DEVICES)
        n = VGPU_MAX_DEVICES;
    for (uint32_t i = 0; i < n; i++) {
        if (vgpu_uuid_equal(r->dev[i].uuid, uuid))
            return (int)i;
    }
    return -1;
}

int vgpu_region_device_index(const char *uuid)
{
    int i = vgpu_region_device_find(uuid);
    if (i >= 0)
        return i;
    struct vgpu_region *r = vgpu_region_get();
    if (r == NULL)
        return -1;
    lock_slots(r);
    uint32_t n = atomic_load(&r->h.device_count);
    for (i = 0; i < (int)n && i < VGPU_MAX_DEVICES; i++) {
        if (vgpu_uuid_equal(r->dev[i].uuid, uuid))
            break;
    }
    if (i >= (int)n) {
        if (n >= VGPU_MAX_DEVICES) {
            i = -1;
        } else {
            i = (int)n;
            snprintf(r->dev[i].uuid, sizeof r->dev[i].uuid, "%s", uuid);
            atomic_store_explicit(&r->h.device_count, n + 1, memory_order_release);
        }
    }
    unlock_slots(r);
    if (i < 0)
        vgpu_error("shared region has no room for device %s", uuid);
    return i;
}

void vgpu_region_publish_limit(int didx, bool has_limit, uint64_t limit, unsigned sm)
{
    struct vgpu_region *r = vgpu_region_get();
    if (r == NULL || didx < 0 || didx >= VGPU_MAX_DEVICES)
        return;
    atomic_store(&r->dev[didx].limit, has_limit ? limit : 0);
    atomic_store(&r->dev[didx].has_limit, has_limit ? 1u : 0u);
    atomic_store(&r->dev[didx].sm_limit, sm);
}

/* ---- charge / uncharge ------------------------------------------------------------------- */

/* Reached only when cfg->test_stall_in_lock is set: by VGPU_TEST_STALL_IN_LOCK in a test build,
 * or directly by the C unit tests; the shipped library never sets it. */
static void test_stall(void)
{
    static const char msg[] = "[libvgpu] TEST: stalling while holding the device lock\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    for (;;)
        pause();
}

bool vgpu_region_charge(int didx, uint64_t size, bool has_limit, uint64_t limit)
{
    if (didx < 0 || didx >= VGPU_MAX_DEVICES ||
        __builtin_expect(atomic_load_explicit(&g_exiting, memory_order_relaxed), 0))
        return false;
    struct vgpu_region_proc *s = atomic_load_explicit(&g_slot, memory_order_acquire);
    if (__builtin_expect(s == NULL, 0))
        s = vgpu_region_slot();
    /* g_region is published (release) before g_slot, and never cleared but in a fork child */
    struct vgpu_region *r = atomic_load_explicit(&g_region, memory_order_acquire);
    if (s == NULL || r == NULL)
        return false;
    struct vgpu_region_device *dev = &r->dev[didx];
    lock_device(r, didx);
    uint64_t used = atomic_load_explicit(&dev->used, memory_order_relaxed);
    bool ok = size <= UINT64_MAX - used && (!has_limit || (size <= limit && used <= limit - size));
    if (ok) {
        atomic_store_explicit(&dev->used, used + size, memory_order_relaxed);
        if (__builtin_expect(g_test_stall, 0))
            test_stall();
        /* under the device lock, like every writer of it: no read-modify-write needed */
        atomic_store_explicit(&s->used[didx], atomic_load_explicit(&s->used[didx], memory_order_relaxed) + size,
                              memory_order_relaxed);
        if (used + size > atomic_load_explicit(&dev->peak, memory_order_relaxed))
            atomic_store_explicit(&dev->peak, used + size, memory_order_relaxed);
    }
    unlock_device(r, didx);
    return ok;
}

void vgpu_region_uncharge(int didx, uint64_t size)
{
    if (didx < 0 || didx >= VGPU_MAX_DEVICES)
        return;
    struct vgpu_region_proc *s = atomic_load_explicit(&g_slot, memory_order_acquire);
    struct vgpu_region *r = atomic_load_explicit(&g_region, memory_order_acquire);
    if (s == NULL || r == NULL)
        return;
    lock_device(r, didx);
    uint64_t used = atomic_load_explicit(&r->dev[didx].used, memory_order_relaxed);
    atomic_store_explicit(&r->dev[didx].used, used >= size ? used - size : 0, memory_order_relaxed);
    uint64_t mine = atomic_load_explicit(&s->used[didx], memory_order_relaxed);
    atomic_store_explicit(&s->used[didx], mine >= size ? mine - size : 0, memory_order_relaxed);
    unlock_device(r, didx);
}

static atomic_bool g_reported;

uint64_t vgpu_region_used(int didx)
{
    struct vgpu_region *r = vgpu_region_get();
    if (r == NULL || didx < 0 || didx >= VGPU_MAX_DEVICES)
        return 0;
    /* The first report of a process reflects what is really in use: memory of dead processes
     * (kill -9) is reclaimed first, once (registration does not scan, see vgpu_region_slot). */
    if (!atomic_load_explicit(&g_reported, memory_order_relaxed) &&
        !atomic_exchange(&g_reported, true))
        reclaim_holding(r);
    return atomic_load_explicit(&r->dev[didx].used, memory_order_relaxed);
}

/* ---- fork -------------------------------------------------------------------------------- */

void vgpu_region_atfork_child(void)
{
    /* The child owns no device memory and must not keep the parent's slot: drop the mapping and
     * our copy of the descriptor (the parent's liveness lock stays with the parent's copy) and
     * register again on first use. */
    struct vgpu_region *r = atomic_load(&g_region);
    if (r != NULL)
        munmap(r, sizeof(struct vgpu_region));
    if (g_fd >= 0)
        close(g_fd);
    g_fd = -1;
    g_private = false;
    g_slot_idx = -1;
    g_slot_pid = 0;
    g_tag = 0;
    atomic_store(&g_slot, NULL);
    atomic_store(&g_region, NULL);
    atomic_store(&g_exiting, false);
    pthread_mutex_init(&g_attach_mu, NULL);
    atomic_store(&g_reported, false);
}
