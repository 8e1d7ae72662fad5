/* Shared core of the fake libcuda.so.1 / libnvidia-ml.so.1: configuration from FAKE_CUDA_*
 * environment variables, the (optionally cross-process) device state, simulated time.
 * Compiled into both libraries with hidden visibility; the two copies meet through the same
 * state file (FAKE_CUDA_STATE) or, without one, through fake_cuda_internal_state() exported by
 * the fake libcuda. */
#ifndef FAKE_COMMON_H
#define FAKE_COMMON_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FAKE_HIDDEN __attribute__((visibility("hidden")))
#define FAKE_EXPORT __attribute__((visibility("default")))

/* The versions of one call (cuMemFreeAsync and cuMemFreeAsync_ptsz, nvmlInit and nvmlInit_v2, ...)
 * behave alike, so their bodies are written once: FORWARD2(a, b, CHECK, (params), PRE, CALL) defines
 * a and b as "CHECK(); PRE; return CALL;", with the file's API return type and ENTER/ENTER_INIT as
 * CHECK. Each name stays its own exported symbol with its own fault-injection name (__func__). */
#define FAKE_FORWARD(name, CHECK, params, pre, call)                                               \
    API name params                                                                                \
    {                                                                                              \
        CHECK();                                                                                   \
        pre;                                                                                       \
        return call;                                                                               \
    }
#define FORWARD2(a, b, CHECK, params, pre, call)                                                   \
    FAKE_FORWARD(a, CHECK, params, pre, call)                                                      \
    FAKE_FORWARD(b, CHECK, params, pre, call)
#define FORWARD3(a, b, c, CHECK, params, pre, call)                                                \
    FORWARD2(a, b, CHECK, params, pre, call)                                                       \
    FAKE_FORWARD(c, CHECK, params, pre, call)

#define FAKE_MAX_DEVICES 16
#define FAKE_MAX_PROCS 512
#define FAKE_DEV_SAMPLES 4096 /* device busy history ring (>= 1 ms apart) */
#define FAKE_PROC_SAMPLES 32  /* per process and device submission history (>= 40 ms apart) */
#define FAKE_STATE_MAGIC 0x46414b4543554441ULL /* "FAKECUDA" */
#define FAKE_STATE_VERSION 1

#define FAKE_DRIVER_VERSION 12090
#define FAKE_DRIVER_VERSION_STR "575.57.08"

struct fake_config {
    int device_count;
    uint64_t memory[FAKE_MAX_DEVICES];
    int sm_count[FAKE_MAX_DEVICES];
    char uuid[FAKE_MAX_DEVICES][96];      /* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */
    char pci_bus_id[FAKE_MAX_DEVICES][32]; /* "0000:01:00.0" */
    char name[96];
    uint64_t ns_per_block;
    uint64_t context_size;
    uint64_t util_window_ns;
    uint64_t shadow_max;
    int cc_major, cc_minor;
    const char *state_path;
};

struct fake_sample {
    uint64_t t;    /* CLOCK_MONOTONIC ns of the last launch merged into this sample */
    uint64_t t0;   /* creation time */
    uint64_t sched; /* total busy ns scheduled so far (device: including queued work) */
    uint64_t until; /* busy-until after that launch */
};

struct fake_proc_sample {
    uint64_t t0;
    uint64_t sched;
};

struct fake_proc_dev {
    _Atomic uint64_t used;  /* device memory held, bytes */
    _Atomic uint64_t sched; /* busy ns submitted */
    uint32_t head;           /* index of the newest sample; guarded by the device lock */
    uint32_t count;
    struct fake_proc_sample samples[FAKE_PROC_SAMPLES];
};

struct fake_proc {
    _Atomic uint64_t start_ns;
    struct fake_proc_dev dev[FAKE_MAX_DEVICES];
};

struct fake_dev {
    uint64_t total;
    _Atomic uint64_t used;
    _Atomic int32_t lock; /* holder pid, 0 = free */
    uint32_t pad;
    /* simulated time; guarded by lock */
    uint64_t busy_until;
    uint64_t sched;
    uint64_t launches;
    uint32_t head, count;
    struct fake_sample samples[FAKE_DEV_SAMPLES];
};

struct fake_state {
    uint64_t magic;
    uint32_t version;
    uint32_t device_count;
    uint64_t size;
    _Atomic uint32_t init_done;
    uint32_t pad;
    struct fake_dev dev[FAKE_MAX_DEVICES];
    /* pid of each process slot (0: free, -1: being set up or reaped); kept apart from the
     * slots so a scan touches one page */
    _Atomic int32_t proc_pid[FAKE_MAX_PROCS];
    struct fake_proc procs[FAKE_MAX_PROCS];
};

/* configuration: parsed once; a malformed FAKE_CUDA_* variable prints
 * "fake-cuda: FAKE_CUDA_X=...: <reason>" on stderr and exits with status 2. */
FAKE_HIDDEN const struct fake_config *fake_cfg(void);
FAKE_HIDDEN struct fake_state *fake_state(void);
FAKE_HIDDEN uint64_t fake_now_ns(void);
FAKE_HIDDEN void fake_sleep_until(uint64_t t_ns);

/* memory accounting (device-wide and for the calling process); false: would exceed total */
FAKE_HIDDEN bool fake_mem_charge(int dev, uint64_t bytes);
FAKE_HIDDEN void fake_mem_uncharge(int dev, uint64_t bytes);
/* slot of this process (created on demand), or NULL when the table is full */
FAKE_HIDDEN struct fake_proc *fake_my_proc(void);
/* drop the slots of processes that no longer exist, releasing their memory */
FAKE_HIDDEN void fake_reap_dead(void);

/* simulated kernel execution: returns the busy-until time of the device after queuing */
FAKE_HIDDEN uint64_t fake_launch(int dev, uint64_t blocks);
FAKE_HIDDEN uint64_t fake_busy_until(int dev);
/* device busy ns actually executed by time t (t <= now) */
FAKE_HIDDEN uint64_t fake_busy_at(int dev, uint64_t t);
/* percent of [now - window, now] the device was busy */
FAKE_HIDDEN unsigned fake_util_percent(int dev, uint64_t window_ns);
/* percent of [since, now] covered by work a process submitted */
FAKE_HIDDEN unsigned fake_proc_util_percent(struct fake_proc *p, int dev, uint64_t since_ns, uint64_t now_ns);

FAKE_HIDDEN bool fake_pid_alive(int32_t pid);

/* FAKE_CUDA_FAIL_<name>=<code>[:<count>]: returns the code to fail with, or 0 */
FAKE_HIDDEN int fake_injected_failure(const char *name);

#endif
