/* Compute cap (simple, correct first version).
 *
 * Per device and process: a token bucket in "thread blocks", refilled at RATE blocks/s.  A
 * launch takes its grid size from the bucket; when the bucket is empty the launching thread
 * sleeps exactly until it refills (no polling, no thread).  Every WINDOW, on the launch path,
 * the rate is steered by the measured utilization u of the device (NVML) toward the cap c:
 *     rate *= clamp(c / u, 1/2, 2) ^ 1/2
 * a multiplicative (unit-free) step, so the gain does not depend on the SM count or on the
 * kernel cost model.  Before the first measurement the bucket does not throttle; if no
 * utilization can be measured the cap cannot be enforced and an error says so (never silently).
 * Policies: disable = never throttle; force = always; default = follow the region's
 * util_switch (1 unless a monitor turned it off).  A monitor blocks launches of a lower
 * priority claim by writing recent_kernel < 0 into the region. */
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
#include <string.h>
#include <time.h>

#define WINDOW_NS 100000000LL  /* controller period: 100 ms */
#define BURST_NS 20000000LL    /* bucket depth: 20 ms worth of launches */
#define MAX_SLEEP_NS 200000000LL

atomic_int vgpu_limiter_state;

struct bucket {
    pthread_mutex_t mu;
    int ready;        /* 0 unknown, 1 capped, -1 not capped */
    unsigned cap;     /* percent */
    double rate;      /* blocks per second; 0 = not yet calibrated */
    double tokens;
    long long last_ns;
    long long win_ns;
    double win_blocks;
    nvmlDevice_t nvml;
    int nvml_ok;
    int warned;
};

static struct bucket g_b[VGPU_MAX_DEVICES];
static pthread_once_t g_init_once = PTHREAD_ONCE_INIT;

static void init_buckets(void)
{
    for (int i = 0; i < VGPU_MAX_DEVICES; i++)
        pthread_mutex_init(&g_b[i].mu, NULL);
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ns(long long ns)
{
    if (ns <= 0)
        return;
    struct timespec ts = {ns / 1000000000LL, ns % 1000000000LL};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

int vgpu_limiter_init_state(void)
{
    const struct vgpu_config *cfg = vgpu_config_get();
    bool any = false;
    if (!cfg->disabled && cfg->policy != VGPU_POLICY_DISABLE) {
        if (cfg->uuid_mode) {
            for (size_t i = 0; i < cfg->n_uuid; i++)
                any = any || (cfg->uuid[i].cores > 0 && cfg->uuid[i].cores < 100);
        } else {
            any = cfg->sm_global > 0;
            for (int i = 0; i < VGPU_MAX_DEVICES; i++)
                any = any || (cfg->sm_index_present[i] && cfg->sm_index[i] > 0);
        }
    }
    int s = any ? 2 : 1;
    atomic_store(&vgpu_limiter_state, s);
    return s;
}

static int measure_util(struct bucket *b, const struct vgpu_device *d, unsigned *util)
{
    if (b->nvml_ok == 0) {
        b->nvml_ok = -1;
        if (vgpu_nvml_load() && vgpu_nvml.nvmlInit_v2 != NULL &&
            vgpu_nvml.nvmlDeviceGetHandleByUUID != NULL && vgpu_nvml.nvmlInit_v2() == NVML_SUCCESS &&
            vgpu_nvml.nvmlDeviceGetHandleByUUID(d->uuid, &b->nvml) == NVML_SUCCESS)
            b->nvml_ok = 1;
    }
    if (b->nvml_ok != 1 || vgpu_nvml.nvmlDeviceGetUtilizationRates == NULL)
        return -1;
    nvmlUtilization_t u;
    if (vgpu_nvml.nvmlDeviceGetUtilizationRates(b->nvml, &u) != NVML_SUCCESS)
        return -1;
    *util = u.gpu;
    return 0;
}

static void control(struct bucket *b, const struct vgpu_device *d, long long now)
{
    long long span = now - b->win_ns;
    if (span < WINDOW_NS)
        return;
    unsigned u;
    if (measure_util(b, d, &u) != 0) {
        if (!b->warned) {
            b->warned = 1;
            vgpu_error("CUDA device %d: cannot measure utilization (NVML); the %u%% compute cap "
                       "is NOT enforced",
                       d->ordinal, b->cap);
        }
    } else {
        double observed = b->win_blocks * 1e9 / (double)span;
        if (b->rate <= 0.0) {
            /* calibrate: what was launched at utilization u, scaled to the cap */
            if (u > 0 && observed > 0.0)
                b->rate = observed * (double)b->cap / (double)(u > b->cap ? u : b->cap);
        } else if (u > 0) {
            double f = (double)b->cap / (double)u;
            if (f > 2.0)
                f = 2.0;
            if (f < 0.5)
                f = 0.5;
            /* only speed up if the bucket was actually the bottleneck */
            if (f < 1.0 || observed >= 0.5 * b->rate)
                b->rate *= f > 1.0 ? 1.0 + (f - 1.0) * 0.5 : 1.0 - (1.0 - f) * 0.5;
        }
        struct vgpu_region *r = vgpu_region_get();
        if (r != NULL && d->didx >= 0)
            atomic_store_explicit(&r->dev[d->didx].util, u, memory_order_relaxed);
    }
    b->win_ns = now;
    b->win_blocks = 0.0;
}

static bool switch_on(void)
{
    const struct vgpu_config *cfg = vgpu_config_get();
    if (cfg->policy == VGPU_POLICY_FORCE)
        return true;
    struct vgpu_region *r = vgpu_region_get();
    return r == NULL || atomic_load_explicit(&r->h.util_switch, memory_order_relaxed) != 0;
}

static void priority_gate(void)
{
    struct vgpu_region *r = vgpu_region_get();
    while (r != NULL && atomic_load_explicit(&r->h.recent_kernel, memory_order_relaxed) < 0)
        sleep_ns(10000000LL);
}

void vgpu_limiter_launch(CUstream s, uint64_t blocks)
{
    pthread_once(&g_init_once, init_buckets);
    CUdevice dev;
    if (vgpu_stream_device(s, &dev) != CUDA_SUCCESS || dev < 0 || dev >= VGPU_MAX_DEVICES)
        return;
    const struct vgpu_device *d = vgpu_device_get(dev);
    if (d == NULL || d->sm == 0)
        return;
    priority_gate();
    if (!switch_on())
        return;
    struct bucket *b = &g_b[dev];
    pthread_mutex_lock(&b->mu);
    long long now = now_ns();
    if (b->ready == 0) {
        b->ready = 1;
        b->cap = d->sm;
        b->last_ns = b->win_ns = now;
    }
    control(b, d, now);
    b->win_blocks += (double)blocks;
    long long wait = 0;
    if (b->rate > 0.0) {
        b->tokens += b->rate * (double)(now - b->last_ns) / 1e9;
        double burst = b->rate * (double)BURST_NS / 1e9;
        if (b->tokens > burst)
            b->tokens = burst;
        b->last_ns = now;
        b->tokens -= (double)blocks;
        if (b->tokens < 0.0)
            wait = (long long)(-b->tokens / b->rate * 1e9);
    } else {
        b->last_ns = now;
    }
    pthread_mutex_unlock(&b->mu);
    /* the debt is already booked: later launches wait behind this one */
    sleep_ns(wait < MAX_SLEEP_NS ? wait : MAX_SLEEP_NS);
}

void vgpu_limiter_atfork_child(void)
{
    memset(g_b, 0, sizeof g_b);
    for (int i = 0; i < VGPU_MAX_DEVICES; i++)
        pthread_mutex_init(&g_b[i].mu, NULL);
    atomic_store(&vgpu_limiter_state, 0);
}
