/* Compute (SM) cap: a token bucket on every launch path, shared by all processes of a claim,
 * whose cost model is steered by measured utilization.  No thread, no polling.
 *
 * Zero overhead without a cap.  vgpu_limiter_maybe_active() (limiter.h) is one relaxed load
 * and one predictable branch: the state is "off" unless some device has a cap in 1..99 and the
 * policy is not "disable".
 *
 * Bucket (GCRA, lock-free, shared).  The budget of a device is wall time: with a cap of c
 * percent, a launch that will keep the device busy for D ns costs D / (c/100) ns of budget.  The
 * claim's bucket is one 64-bit "theoretical arrival time" TAT in the shared region
 * (vgpu_region_limiter.tat): a launch atomically sets TAT = max(TAT, now - BURST) + cost and
 * then sleeps until the old TAT (pay after: a launch waits for the debt of earlier launches,
 * so a single huge kernel still runs, and sleep overshoot is absorbed by up to BURST of
 * credit).  Every process of the claim books into the same TAT, so they share one budget.  There
 * is nothing per process to reclaim: a process killed while sleeping leaves at most the cost of
 * its own launch booked, which expires as wall time passes (the budget is time, not a counter).
 * The lead of TAT over now is bounded (MAX_LEAD) so a wrong estimate can never block for long.
 *
 * Cost model (why the gain does not depend on the SM count).  D = blocks * tau, where tau is the
 * claim's estimated device time per thread block on that device, in ns.  tau is measured, not
 * derived from SMs or threads: every PERIOD one launching process of the claim (elected by a CAS
 * on ctl_next; whoever launches first after the period ends) reads the utilization u of the
 * device (NVML, a percentage over NVML's averaging window W) and the number of blocks the claim
 * submitted during the last W (ring of cumulative block counts, interpolated), and sets
 *     est = u/100 * W / blocks_in_W            (device ns per block, measured)
 *     tau = sqrt(tau * est)                    (gain 1/2 in log space, step x1/2..x2)
 * At the fixed point the launch rate is exactly cap/tau_true blocks per ns, i.e. the device is
 * busy cap% of the time.  Every quantity is a time or a ratio of measurements; the update is
 * multiplicative with a constant gain, so the loop is the same on 20 or 188 SMs, with 1 or 10^5
 * blocks per launch, and it does not wind up when the application uses less than its cap (est
 * stays a valid measurement of tau whether or not the bucket binds).  W is assumed to be 500 ms
 * (VGPU_LIMITER_WINDOW_MS, 100..800); a wrong W only slows transients: in steady state
 * u * W / blocks_in_W is correct for any W.  Before the first step (one PERIOD after the claim's
 * first capped launch) launches are not delayed.
 *
 * What u is.  Per-process utilization is preferred: when every live process of the claim knows
 * its host PID (slot.host_pid), u = device utilization * (sum of smUtil of the claim's PIDs) /
 * (sum of smUtil of all PIDs) from nvmlDeviceGetProcessUtilization, so other tenants of the GPU
 * do not count.  Host PIDs are found without creating a CUDA context: a process whose PID
 * namespace is the initial one (inode PROC_PID_INIT_INO of /proc/self/ns/pid) has host PID ==
 * getpid(); one whose /proc is the host's (NSpid with several levels and /proc/1 in the initial
 * namespace) takes the first NSpid entry.  Otherwise the host PID stays unknown and the device
 * utilization is used as is (a warning says so: other tenants' work then counts against the
 * cap, which is conservative).  If NVML cannot be used at all, an error is logged and the cap is
 * enforced open loop: tau is calibrated once, 0.5 s after the claim's first launch, as
 * (time since the first launch) / blocks, i.e. as if the device had been saturated all along
 * (conservative), and then kept.
 *
 * Policies (GPU_CORE_UTILIZATION_POLICY): disable = never throttle (and the hooks stay on the
 * fast path); force = always throttle; default = throttle unless the region's util_switch is 0
 * (HAMi's "only when contended": a monitor may clear it when the claim is alone on the GPU; it
 * is 1 when the region is created, so by default the cap applies).  Priority: a monitor blocks
 * the launches of a low-priority claim (CUDA_TASK_PRIORITY != 0) by writing recent_kernel < 0;
 * those launches sleep in 10 ms steps until it is >= 0 again (high-priority processes never
 * wait).  A capped launch marks activity by setting recent_kernel to 2 (HAMi's convention; only
 * when it is >= 0 and not already 2).  Caps are read from the process's environment; a monitor
 * changing the region's sm_limit at run time has no effect. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "limiter.h"

#include "config.h"
#include "device.h"
#include "driver.h"
#include "log.h"
#include "region.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(struct vgpu_region_limiter) == 224, "limiter record size");
_Static_assert(offsetof(struct vgpu_region_header, lim) == 128, "limiter records offset");
_Static_assert(sizeof(struct vgpu_region_header) <= VGPU_REGION_HEADER_SIZE, "header size");

#define PERIOD_NS 100000000LL   /* controller period */
#define BURST_NS 20000000LL     /* bucket depth (credit), wall ns */
#define MAX_LEAD_NS 4000000000LL /* TAT never runs more than this ahead of now */
#define OPEN_LOOP_CAL_NS 500000000LL /* open loop: calibrate over the first 0.5 s */
#define PROC_PID_INIT_INO 0xEFFFFFFCu
#define MAX_SAMPLES 256

enum { MODE_NONE = 0, MODE_DEVICE = 1, MODE_PROCESS = 2, MODE_OPEN_LOOP = 3 };

atomic_int vgpu_limiter_state;

/* Process-local facts per CUDA device. */
struct local {
    nvmlDevice_t nvml;
    atomic_int nvml_ok; /* 0 unknown, 1 usable, -1 not */
    atomic_int logged_mode;
    struct vgpu_region_limiter own; /* used when the device has no region record */
};

static struct local g_local[VGPU_MAX_DEVICES];
static pthread_mutex_t g_nvml_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic long long g_window_ns;
static atomic_int g_host_pid_done;

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* CLOCK_MONOTONIC at tick resolution (never ahead of now_ns()): a few ns instead of a full
 * clock read, for the checks of every launch that need no precision (see vgpu_limiter_launch). */
static long long coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ns(long long ns)
{
    if (ns <= 0)
        return;
    struct timespec ts = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static double load_double(_Atomic uint64_t *p)
{
    uint64_t b = atomic_load_explicit(p, memory_order_relaxed);
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static void store_double(_Atomic uint64_t *p, double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    atomic_store_explicit(p, b, memory_order_relaxed);
}

/* sqrt for x in [1/4, 4] without libm (Newton from a good start) */
static double sqrt_pos(double x)
{
    double y = 0.5 * (1.0 + x);
    for (int i = 0; i < 6; i++)
        y = 0.5 * (y + x / y);
    return y;
}

static bool cap_in_range(unsigned c)
{
    return c > 0 && c < 100;
}

int vgpu_limiter_init_state(void)
{
    const struct vgpu_config *cfg = vgpu_config_get();
    bool any = false;
    if (!cfg->disabled && cfg->policy != VGPU_POLICY_DISABLE)
        any = vgpu_config_any_cap(cfg);
    if (atomic_load(&g_window_ns) == 0) {
        const char *w = getenv("VGPU_LIMITER_WINDOW_MS");
        long ms = w != NULL ? strtol(w, NULL, 10) : 500;
        if (ms < 100)
            ms = 100;
        if (ms > 800)
            ms = 800;
        atomic_store(&g_window_ns, ms * 1000000LL);
    }
    int s = any ? 2 : 1;
    atomic_store(&vgpu_limiter_state, s);
    return s;
}

/* ---- host PID (no CUDA context involved) ---------------------------------------------------- */

static ino_t ns_inode(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_ino : 0;
}

static int discover_host_pid(void)
{
    if (ns_inode("/proc/self/ns/pid") == PROC_PID_INIT_INO)
        return (int)getpid();
    FILE *f = fopen("/proc/self/status", "re");
    if (f == NULL)
        return 0;
    char line[256];
    int first = 0, levels = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "NSpid:", 6) != 0)
            continue;
        char *p = line + 6, *end;
        for (;;) {
            long v = strtol(p, &end, 10);
            if (end == p)
                break;
            if (levels++ == 0)
                first = (int)v;
            p = end;
        }
        break;
    }
    fclose(f);
    /* several levels: this /proc shows outer namespaces; the first is the host's only if the
     * /proc's PID 1 is in the initial namespace */
    if (levels > 1 && ns_inode("/proc/1/ns/pid") == PROC_PID_INIT_INO)
        return first;
    return 0;
}

static void publish_host_pid(void)
{
    if (atomic_load_explicit(&g_host_pid_done, memory_order_acquire))
        return;
    struct vgpu_region_proc *slot = vgpu_region_slot();
    int pid = discover_host_pid();
    if (slot != NULL && pid > 0)
        __atomic_store_n(&slot->host_pid, pid, __ATOMIC_RELEASE);
    atomic_store_explicit(&g_host_pid_done, 1, memory_order_release);
}

/* ---- measurement --------------------------------------------------------------------------- */

static bool nvml_handle(struct local *lc, const struct vgpu_device *d)
{
    int ok = atomic_load(&lc->nvml_ok);
    if (ok != 0)
        return ok == 1;
    pthread_mutex_lock(&g_nvml_mu);
    if (atomic_load(&lc->nvml_ok) == 0) {
        ok = -1;
        if (vgpu_nvml_load() && vgpu_nvml.nvmlInit_v2 != NULL &&
            vgpu_nvml.nvmlDeviceGetHandleByUUID != NULL &&
            vgpu_nvml.nvmlDeviceGetUtilizationRates != NULL &&
            vgpu_nvml.nvmlInit_v2() == NVML_SUCCESS &&
            vgpu_nvml.nvmlDeviceGetHandleByUUID(d->uuid, &lc->nvml) == NVML_SUCCESS)
            ok = 1;
        atomic_store(&lc->nvml_ok, ok); /* publishes lc->nvml (seq_cst) */
    }
    pthread_mutex_unlock(&g_nvml_mu);
    return atomic_load(&lc->nvml_ok) == 1;
}

/* Host PIDs of the claim's live processes; false if any is unknown. */
static bool claim_pids(struct vgpu_region *r, int *pids, size_t cap, size_t *n)
{
    *n = 0;
    if (r == NULL)
        return false;
    uint32_t hi = atomic_load(&r->h.proc_high);
    for (uint32_t i = 0; i < hi && i < VGPU_REGION_MAX_PROCS; i++) {
        if (atomic_load(&r->proc[i].state) != VGPU_SLOT_ACTIVE)
            continue;
        int hp = __atomic_load_n(&r->proc[i].host_pid, __ATOMIC_ACQUIRE);
        if (hp <= 0 || *n >= cap)
            return false;
        pids[(*n)++] = hp;
    }
    return *n > 0;
}

/* Utilization of the device attributable to the claim, percent (may be fractional). */
static int measure(struct local *lc, const struct vgpu_device *d, double *u, int *mode)
{
    if (!nvml_handle(lc, d))
        return -1;
    nvmlUtilization_t ur;
    if (vgpu_nvml.nvmlDeviceGetUtilizationRates(lc->nvml, &ur) != NVML_SUCCESS)
        return -1;
    *u = (double)ur.gpu;
    *mode = MODE_DEVICE;
    int pids[MAX_SAMPLES];
    size_t np = 0;
    if (ur.gpu == 0 || vgpu_nvml.nvmlDeviceGetProcessUtilization == NULL ||
        !claim_pids(vgpu_region_get(), pids, MAX_SAMPLES, &np))
        return 0;
    nvmlProcessUtilizationSample_t s[MAX_SAMPLES];
    unsigned int cnt = MAX_SAMPLES;
    nvmlReturn_t rc = vgpu_nvml.nvmlDeviceGetProcessUtilization(lc->nvml, s, &cnt, 0);
    if (rc != NVML_SUCCESS || cnt > MAX_SAMPLES)
        return 0;
    unsigned long long mine = 0, all = 0;
    for (unsigned i = 0; i < cnt; i++) {
        all += s[i].smUtil;
        for (size_t k = 0; k < np; k++)
            if ((unsigned)pids[k] == s[i].pid) {
                mine += s[i].smUtil;
                break;
            }
    }
    if (all > 0)
        *u = *u * (double)mine / (double)all;
    *mode = MODE_PROCESS;
    return 0;
}

/* ---- controller ---------------------------------------------------------------------------- */

static void ring_push(struct vgpu_region_limiter *L, long long t, uint64_t blocks)
{
    uint32_t cnt = atomic_load(&L->ring_count);
    uint32_t h = cnt == 0 ? 0 : (atomic_load(&L->ring_head) + 1) % VGPU_LIMITER_RING;
    atomic_store(&L->ring[h].t, t);
    atomic_store(&L->ring[h].blocks, blocks);
    atomic_store(&L->ring_head, h);
    if (cnt < VGPU_LIMITER_RING)
        atomic_store(&L->ring_count, cnt + 1);
}

/* Cumulative blocks of the claim at time T (interpolated between controller steps, the newest
 * point being (now, b_now)); false if the history does not reach back to T. */
static bool blocks_at(struct vgpu_region_limiter *L, long long t, long long now, uint64_t b_now,
                      double *out)
{
    uint32_t cnt = atomic_load(&L->ring_count), h = atomic_load(&L->ring_head);
    if (cnt == 0 || cnt > VGPU_LIMITER_RING || h >= VGPU_LIMITER_RING)
        return false;
    long long t_next = now;
    double b_next = (double)b_now;
    for (uint32_t k = 0; k < cnt; k++) {
        uint32_t i = (h + VGPU_LIMITER_RING - k) % VGPU_LIMITER_RING;
        long long ti = atomic_load(&L->ring[i].t);
        double bi = (double)atomic_load(&L->ring[i].blocks);
        if (ti <= t) {
            *out = t_next > ti ? bi + (b_next - bi) * (double)(t - ti) / (double)(t_next - ti) : bi;
            return true;
        }
        t_next = ti;
        b_next = bi;
    }
    /* the oldest entry is the claim's first step, before which nothing was launched */
    if (cnt < VGPU_LIMITER_RING) {
        *out = b_next;
        return true;
    }
    return false;
}

static const char *mode_name(int m)
{
    return m == MODE_PROCESS ? "per-process utilization of the claim (NVML)"
           : m == MODE_DEVICE ? "device utilization (NVML; other tenants' work counts too)"
                              : "open loop";
}

static void control(struct vgpu_region_limiter *L, struct local *lc, const struct vgpu_device *d,
                    unsigned cap, long long now)
{
    uint64_t b_now = atomic_load(&L->blocks);
    double u = 0.0;
    int mode = MODE_OPEN_LOOP;
    if (measure(lc, d, &u, &mode) != 0)
        mode = MODE_OPEN_LOOP;
    double tau = load_double(&L->tau_bits), b_then = 0.0;
    long long win = atomic_load(&g_window_ns);
    if (win <= 0)
        win = 500000000LL;
    /* after an idle gap (no step for 2 periods: nobody launched) the history cannot say when
     * the blocks before the gap ran: skip one estimate */
    uint32_t head = atomic_load(&L->ring_head) % VGPU_LIMITER_RING;
    bool gap = atomic_load(&L->ring_count) > 0 && now - atomic_load(&L->ring[head].t) > 2 * PERIOD_NS;
    if (mode != MODE_OPEN_LOOP) {
        if (!gap && blocks_at(L, now - win, now, b_now, &b_then) && (double)b_now > b_then) {
            double busy = (u < 0.5 ? 0.5 : u) / 100.0 * (double)win;
            double est = busy / ((double)b_now - b_then);
            if (!(tau > 0.0) || !__builtin_isfinite(tau)) {
                tau = est;
            } else {
                /* tau *= sqrt(est / tau) (GAIN 1/2), the ratio clamped to 1/4..4 */
                double ratio = est / tau;
                tau *= sqrt_pos(ratio < 0.25 ? 0.25 : ratio > 4.0 ? 4.0 : ratio);
            }
        }
        atomic_store_explicit(&L->util, (uint32_t)(u + 0.5), memory_order_relaxed);
        struct vgpu_region *r = vgpu_region_get();
        if (r != NULL && d->didx >= 0)
            atomic_store_explicit(&r->dev[d->didx].util, (uint32_t)(u + 0.5),
                                  memory_order_relaxed);
    } else if (!(tau > 0.0)) {
        /* open loop: calibrate once as if the device had been saturated since the first step */
        uint32_t cnt = atomic_load(&L->ring_count), h = atomic_load(&L->ring_head);
        uint32_t oldest = (h + VGPU_LIMITER_RING + 1 - (cnt ? cnt : 1)) % VGPU_LIMITER_RING;
        long long t0 = atomic_load(&L->ring[oldest].t);
        uint64_t b0 = atomic_load(&L->ring[oldest].blocks);
        if (cnt > 0 && b_now > b0 && now - t0 >= OPEN_LOOP_CAL_NS)
            tau = (double)(now - t0) / (double)(b_now - b0);
    }
    if (tau > 0.0 && __builtin_isfinite(tau)) {
        if (tau < 1e-3)
            tau = 1e-3;
        if (tau > 1e9)
            tau = 1e9;
        store_double(&L->tau_bits, tau);
    }
    vgpu_debug("limiter dev %d: u=%.1f blocks_in_window=%.0f tau=%.4g ns/block mode=%d",
               d->ordinal, u, (double)b_now - b_then, tau, mode);
    atomic_store_explicit(&L->mode, (uint32_t)mode, memory_order_relaxed);
    ring_push(L, now, b_now);
    if (atomic_exchange(&lc->logged_mode, mode + 1) != mode + 1) {
        if (mode == MODE_OPEN_LOOP)
            vgpu_error("CUDA device %d: cannot measure utilization (NVML); the %u%% compute cap is "
                       "enforced open loop (calibrated as if the device were saturated)",
                       d->ordinal, cap);
        else if (mode == MODE_DEVICE)
            vgpu_warn("CUDA device %d: %u%% compute cap steered by %s: the host PIDs of the "
                      "claim's processes are not all known",
                      d->ordinal, cap, mode_name(mode));
        else
            vgpu_info("CUDA device %d: %u%% compute cap steered by %s", d->ordinal, cap,
                      mode_name(mode));
    }
}

/* ---- launch path --------------------------------------------------------------------------- */

static void priority_gate(struct vgpu_region *r, const struct vgpu_config *cfg)
{
    if (r == NULL)
        return;
    int v = atomic_load_explicit(&r->h.recent_kernel, memory_order_relaxed);
    if (v < 0 && cfg->priority != 0) {
        do
            sleep_ns(10000000LL);
        while ((v = atomic_load_explicit(&r->h.recent_kernel, memory_order_relaxed)) < 0);
    }
    if (v >= 0 && v != 2)
        atomic_compare_exchange_strong(&r->h.recent_kernel, &v, 2);
}

void vgpu_limiter_launch(CUstream s, uint64_t blocks)
{
    /* With a single visible device every context and stream is on device 0: no driver call
     * (a cuCtxGetDevice per launch) to find it. */
    CUdevice dev = 0;
    if (!vgpu_device_single() &&
        (vgpu_stream_device(s, &dev) != CUDA_SUCCESS || dev < 0 || dev >= VGPU_MAX_DEVICES))
        return;
    const struct vgpu_device *d = vgpu_device_get(dev);
    if (d == NULL || !cap_in_range(d->sm))
        return;
    const struct vgpu_config *cfg = vgpu_config_get();
    struct vgpu_region *r = vgpu_region_get();
    priority_gate(r, cfg);
    if (cfg->policy != VGPU_POLICY_FORCE && r != NULL &&
        atomic_load_explicit(&r->h.util_switch, memory_order_relaxed) == 0)
        return; /* default policy, and a monitor says the claim is alone on the GPU */
    publish_host_pid();

    struct local *lc = &g_local[dev];
    struct vgpu_region_limiter *L =
        r != NULL && d->didx >= 0 && d->didx < VGPU_MAX_DEVICES ? &r->h.lim[d->didx] : &lc->own;
    /* A coarse clock (a tick behind at most) for the controller's schedule and the bucket's
     * booking: a tick late on a 100 ms period, and at most a tick less idle credit (of BURST).
     * The precise clock is read only for the rare controller step and when a launch may have to
     * wait, so a cap that does not bind costs no full clock read. */
    long long now = coarse_ns();

    long long next = atomic_load_explicit(&L->ctl_next, memory_order_relaxed);
    if (next == 0) {
        now = now_ns();
        if (atomic_compare_exchange_strong(&L->ctl_next, &next, now + PERIOD_NS))
            ring_push(L, now, atomic_load(&L->blocks));
    } else if (now >= next &&
               atomic_compare_exchange_strong(&L->ctl_next, &next, now + PERIOD_NS)) {
        now = now_ns();
        control(L, lc, d, d->sm, now);
    }

    double tau = load_double(&L->tau_bits);
    if (tau > 0.0) {
        double cost = (double)blocks * tau * 100.0 / (double)d->sm;
        long long c = cost > (double)MAX_LEAD_NS ? MAX_LEAD_NS : (long long)cost;
        long long old = atomic_load(&L->tat), nw;
        do {
            long long base = old > now - BURST_NS ? old : now - BURST_NS;
            nw = base + c;
            if (nw > now + MAX_LEAD_NS)
                nw = now + MAX_LEAD_NS;
        } while (!atomic_compare_exchange_weak(&L->tat, &old, nw));
        if (old > now) { /* else in credit: no wait whatever the precise time */
            long long wait = old - now_ns();
            if (wait > MAX_LEAD_NS)
                wait = MAX_LEAD_NS;
            sleep_ns(wait);
        }
    }
    atomic_fetch_add_explicit(&L->blocks, blocks, memory_order_relaxed);
}

void vgpu_limiter_atfork_child(void)
{
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        g_local[i].nvml_ok = 0;
        g_local[i].logged_mode = 0;
    }
    pthread_mutex_init(&g_nvml_mu, NULL);
    atomic_store(&g_host_pid_done, 0);
    atomic_store(&vgpu_limiter_state, 0);
}
