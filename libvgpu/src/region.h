/* Shared accounting region: one file per claim (CUDA_DEVICE_MEMORY_SHARED_CACHE), mmapped
 * MAP_SHARED by every process of every container of the claim.
 *
 * Layout (little endian, all offsets fixed; checked by static asserts in region.c):
 *   header  (4096 bytes)   magic "VGPUSHM1", layout version, sizes, slots lock, flags
 *   devices[16] (256 bytes each)   per GPU (keyed by UUID): lock, used total, limit, sm cap
 *   procs[1024] (192 bytes each)   per process: state, pid, start time, per-device usage
 *
 * Atomicity: the limit check and the charge of a device are one step under that device's
 * process-shared robust lock (check used + size <= limit, add to the device total, add to the
 * process's slot).  The lock word names its holder (slot and registration generation); a waiter
 * that finds the holder dead (its slot's liveness byte is unlocked, see below) takes the lock
 * over and recomputes the device total as the sum of the slots (exact, because every writer of
 * those counters holds the same lock).  Readers (cuMemGetInfo, NVML,
 * the exporter) read the totals with plain atomic loads, no lock.
 *
 * Liveness: every process holds an open-file-description (OFD) write lock on one byte of the
 * file at its slot's offset for as long as it lives (the fd is O_CLOEXEC, so exec releases it
 * too).  The kernel drops it when the process dies, in any PID namespace, so a slot whose byte
 * is unlocked is dead; PID reuse cannot keep a dead slot alive.  Registration claims a free slot
 * by taking its byte (no shared lock, no scan of the other slots).  Dead slots are reclaimed
 * (their usage subtracted) lazily: those holding memory at a process's first memory report, all
 * of them when an allocation would otherwise fail or when no slot is free.
 */
#ifndef VGPU_REGION_H
#define VGPU_REGION_H

#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define VGPU_REGION_MAGIC 0x314d485355504756ULL /* "VGPUSHM1" */
/* 2: the device locks are libvgpu's own robust futex locks (see region.c), not glibc robust
 * mutexes; the byte layout is that of version 1. */
#define VGPU_REGION_VERSION 2u
#define VGPU_REGION_MAX_PROCS 1024
#define VGPU_REGION_HEADER_SIZE 4096
#define VGPU_REGION_DEVICE_SIZE 256
#define VGPU_REGION_PROC_SIZE 192

union vgpu_shared_mutex {
    pthread_mutex_t m;     /* the slots lock: a process-shared robust pthread mutex */
    _Atomic uint32_t word; /* a device lock: owner tag | waiters bit, 0 = free (region.c) */
    char pad[64];
};

#define VGPU_LIMITER_RING 10

/* Shared token bucket + controller state of one device of the claim (see limiter.c). */
struct vgpu_region_limiter {
    _Atomic int64_t tat;            /* 0: bucket: time its booked work is paid (CLOCK_MONOTONIC ns) */
    _Atomic uint64_t tau_bits;      /* 8: double, estimated device ns per block; 0 = uncalibrated */
    _Atomic int64_t ctl_next;       /* 16: next controller step (CLOCK_MONOTONIC ns), 0 = never ran */
    _Atomic uint64_t blocks;        /* 24: blocks submitted by the claim (cumulative) */
    _Atomic uint32_t ring_head;     /* 32: newest ring entry */
    _Atomic uint32_t ring_count;    /* 36: entries written (saturates at VGPU_LIMITER_RING) */
    _Atomic uint32_t mode;          /* 40: measurement of the last step (limiter.c enum) */
    _Atomic uint32_t util;          /* 44: last utilization attributed to the claim, percent */
    struct {
        _Atomic int64_t t;          /* CLOCK_MONOTONIC ns of a controller step */
        _Atomic uint64_t blocks;    /* the claim's cumulative blocks then */
    } ring[VGPU_LIMITER_RING];      /* 48 */
    uint8_t reserved[16];           /* 208 */
};

struct vgpu_region_header {
    uint64_t magic;                 /* 0: written last, with release ordering */
    uint32_t version;               /* 8 */
    uint32_t header_size;           /* 12 */
    uint32_t device_size;           /* 16 */
    uint32_t proc_size;             /* 20 */
    uint32_t max_devices;           /* 24 */
    uint32_t max_procs;             /* 28 */
    uint64_t total_size;            /* 32 */
    _Atomic uint32_t proc_high;     /* 40: slots [0, proc_high) may be in use */
    _Atomic int32_t util_switch;    /* 44: 1 = throttle (default), 0 = monitor says uncontended */
    _Atomic int32_t recent_kernel;  /* 48: < 0 = a monitor blocks launches (priority) */
    _Atomic uint32_t device_count;  /* 52: number of device records in use */
    uint8_t reserved0[8];           /* 56 */
    union vgpu_shared_mutex slots_lock; /* 64: guards slot and device-record allocation */
    /* 128: compute-cap state of the claim, one per device record (index = device record).  Lives
     * in what was zero padding of layout version 1, so files of either build stay compatible
     * (all-zero = "not started").  Written lock-free (single atomics) by limiter.c. */
    struct vgpu_region_limiter lim[VGPU_MAX_DEVICES];
};

struct vgpu_region_device {
    union vgpu_shared_mutex lock;   /* 0: guards used + every slot's used[] of this device */
    char uuid[VGPU_UUID_STR];       /* 64: "GPU-...", "" = unused record */
    _Atomic uint64_t used;          /* 160: bytes charged across the claim */
    _Atomic uint64_t limit;         /* 168: last limit written by a process (informational) */
    _Atomic uint32_t has_limit;     /* 176 */
    _Atomic uint32_t sm_limit;      /* 180: 0 = no cap */
    _Atomic uint64_t peak;          /* 184: high-water mark of used */
    _Atomic uint32_t util;          /* 192: last measured utilization % (limiter) */
    _Atomic uint32_t active_procs;  /* 196: informational */
    uint8_t reserved[56];           /* 200 */
};

enum { VGPU_SLOT_FREE = 0, VGPU_SLOT_ACTIVE = 1 };

struct vgpu_region_proc {
    _Atomic uint32_t state;         /* 0 */
    int32_t pid;                    /* 4: pid in the owner's namespace */
    int32_t host_pid;               /* 8: 0 when unknown */
    int32_t priority;               /* 12 */
    uint64_t start_time;            /* 16: not recorded any more (0): liveness is the slot byte */
    _Atomic uint64_t used[VGPU_MAX_DEVICES]; /* 24: bytes charged by this process per device */
    _Atomic uint32_t gen;           /* 152: registrations of this slot (device lock owner tags) */
    uint8_t reserved[36];           /* 156 */
};

struct vgpu_region {
    struct vgpu_region_header h;
    uint8_t hpad[VGPU_REGION_HEADER_SIZE - sizeof(struct vgpu_region_header)];
    struct vgpu_region_device dev[VGPU_MAX_DEVICES];
    struct vgpu_region_proc proc[VGPU_REGION_MAX_PROCS];
};

/* Attaches (creating and initializing it if needed) the region of this process; idempotent and
 * thread-safe.  Falls back to a private anonymous region (limits then apply per process) with an
 * error log when the file cannot be used.  Returns NULL only if even that fails. */
struct vgpu_region *vgpu_region_get(void);

/* Registers this process's slot (once; re-registers after fork).  Returns the slot or NULL. */
struct vgpu_region_proc *vgpu_region_slot(void);

/* Finds or creates the device record for UUID; returns its index or -1 (table full). */
int vgpu_region_device_index(const char *uuid);
/* Finds the record for UUID without creating one; -1 if none. */
int vgpu_region_device_find(const char *uuid);

/* Publishes the limit/cap of a device for readers (exporter). */
void vgpu_region_publish_limit(int didx, bool has_limit, uint64_t limit, unsigned sm);

/* Atomically checks used + size <= limit (when has_limit) and charges size to device DIDX and to
 * this process's slot.  Returns true when charged. */
bool vgpu_region_charge(int didx, uint64_t size, bool has_limit, uint64_t limit);
/* Returns size bytes previously charged by this process. */
void vgpu_region_uncharge(int didx, uint64_t size);
/* Bytes charged on device DIDX by all live (and not yet reclaimed) processes. */
uint64_t vgpu_region_used(int didx);

/* Scans the slots and reclaims the usage of dead processes.  Returns the number reclaimed. */
int vgpu_region_reclaim_dead(void);

/* fork support: called in the child (the child has no slot and must not hold the parent's). */
void vgpu_region_atfork_child(void);

#endif
