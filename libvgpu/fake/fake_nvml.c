/* Fake NVML (libnvidia-ml.so.1): the same devices as the fake libcuda, memory and per-process
 * usage from the shared device state, utilization from the simulated clock. */
#define NVML_NO_UNVERSIONED_FUNC_DEFS 1
#include <nvml.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "fake_common.h"

#define API FAKE_EXPORT nvmlReturn_t DECLDIR

#define ENTER()                                                                                    \
    do {                                                                                           \
        int fail_ = fake_injected_failure(__func__);                                               \
        if (fail_)                                                                                 \
            return (nvmlReturn_t)fail_;                                                            \
    } while (0)

#define ENTER_INIT()                                                                               \
    do {                                                                                           \
        ENTER();                                                                                   \
        if (__atomic_load_n(&g_init_count, __ATOMIC_ACQUIRE) <= 0)                                 \
            return NVML_ERROR_UNINITIALIZED;                                                       \
    } while (0)

struct nvmlDevice_st {
    int index;
};

static struct nvmlDevice_st g_devs[FAKE_MAX_DEVICES];
static int g_init_count;

static int dev_index(nvmlDevice_t d)
{
    if (d < &g_devs[0] || d >= &g_devs[FAKE_MAX_DEVICES])
        return -1;
    int i = (int)(d - g_devs);
    return i < fake_cfg()->device_count ? i : -1;
}

#define DEV_OR_INVALID(var, handle)                                                                \
    int var = dev_index(handle);                                                                   \
    if (var < 0)                                                                                   \
        return NVML_ERROR_INVALID_ARGUMENT

static nvmlReturn_t do_init(unsigned flags)
{
    (void)flags;
    const struct fake_config *c = fake_cfg();
    for (int i = 0; i < FAKE_MAX_DEVICES; i++)
        g_devs[i].index = i;
    fake_state();
    __atomic_add_fetch(&g_init_count, 1, __ATOMIC_ACQ_REL);
    (void)c;
    return NVML_SUCCESS;
}

FORWARD2(nvmlInit, nvmlInit_v2, ENTER, (void), (void)0, do_init(0))

API nvmlInitWithFlags(unsigned int flags)
{
    ENTER();
    return do_init(flags);
}

API nvmlShutdown(void)
{
    ENTER();
    int n = __atomic_load_n(&g_init_count, __ATOMIC_ACQUIRE);
    while (n > 0 && !__atomic_compare_exchange_n(&g_init_count, &n, n - 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
    return n > 0 ? NVML_SUCCESS : NVML_ERROR_UNINITIALIZED;
}

FAKE_EXPORT const char *DECLDIR nvmlErrorString(nvmlReturn_t result)
{
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    default: return "Unknown Error";
    }
}

API nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    ENTER_INIT();
    if (!version)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (length < sizeof FAKE_DRIVER_VERSION_STR)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(version, length, "%s", FAKE_DRIVER_VERSION_STR);
    return NVML_SUCCESS;
}

API nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    ENTER();
    if (!version)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (length < sizeof "12." FAKE_DRIVER_VERSION_STR)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(version, length, "12.%s", FAKE_DRIVER_VERSION_STR);
    return NVML_SUCCESS;
}

API nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion)
{
    ENTER();
    if (!cudaDriverVersion)
        return NVML_ERROR_INVALID_ARGUMENT;
    *cudaDriverVersion = FAKE_DRIVER_VERSION;
    return NVML_SUCCESS;
}

API nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion)
{
    ENTER();
    if (!cudaDriverVersion)
        return NVML_ERROR_INVALID_ARGUMENT;
    *cudaDriverVersion = FAKE_DRIVER_VERSION;
    return NVML_SUCCESS;
}

static nvmlReturn_t get_count(unsigned int *n)
{
    if (!n)
        return NVML_ERROR_INVALID_ARGUMENT;
    *n = (unsigned)fake_cfg()->device_count;
    return NVML_SUCCESS;
}

FORWARD2(nvmlDeviceGetCount, nvmlDeviceGetCount_v2, ENTER_INIT, (unsigned int *deviceCount), (void)0,
         get_count(deviceCount))

static nvmlReturn_t by_index(unsigned index, nvmlDevice_t *device)
{
    if (!device || index >= (unsigned)fake_cfg()->device_count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = &g_devs[index];
    return NVML_SUCCESS;
}

FORWARD2(nvmlDeviceGetHandleByIndex, nvmlDeviceGetHandleByIndex_v2, ENTER_INIT,
         (unsigned int index, nvmlDevice_t *device), (void)0, by_index(index, device))

API nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    ENTER_INIT();
    if (!uuid || !device)
        return NVML_ERROR_INVALID_ARGUMENT;
    const struct fake_config *c = fake_cfg();
    for (int i = 0; i < c->device_count; i++) {
        if (strcasecmp(c->uuid[i], uuid) == 0) {
            *device = &g_devs[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

static nvmlReturn_t by_pci(const char *bus_id, nvmlDevice_t *device)
{
    if (!bus_id || !device)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned dom, bus, d, fn = 0;
    if (sscanf(bus_id, "%x:%x:%x.%x", &dom, &bus, &d, &fn) < 3)
        return NVML_ERROR_INVALID_ARGUMENT;
    const struct fake_config *c = fake_cfg();
    for (int i = 0; i < c->device_count; i++) {
        unsigned a, b, e, f;
        if (sscanf(c->pci_bus_id[i], "%x:%x:%x.%x", &a, &b, &e, &f) == 4 && a == dom && b == bus && e == d &&
            f == fn) {
            *device = &g_devs[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

FORWARD2(nvmlDeviceGetHandleByPciBusId, nvmlDeviceGetHandleByPciBusId_v2, ENTER_INIT,
         (const char *pciBusId, nvmlDevice_t *device), (void)0, by_pci(pciBusId, device))

API nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    ENTER_INIT();
    DEV_OR_INVALID(i, device);
    if (!uuid)
        return NVML_ERROR_INVALID_ARGUMENT;
    const char *u = fake_cfg()->uuid[i];
    if (length < strlen(u) + 1)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(uuid, length, "%s", u);
    return NVML_SUCCESS;
}

API nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    ENTER_INIT();
    DEV_OR_INVALID(i, device);
    (void)i;
    if (!name)
        return NVML_ERROR_INVALID_ARGUMENT;
    const char *n = fake_cfg()->name;
    if (length < strlen(n) + 1)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(name, length, "%s", n);
    return NVML_SUCCESS;
}

API nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    ENTER_INIT();
    DEV_OR_INVALID(i, device);
    if (!index)
        return NVML_ERROR_INVALID_ARGUMENT;
    *index = (unsigned)i;
    return NVML_SUCCESS;
}

API nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber)
{
    ENTER_INIT();
    DEV_OR_INVALID(i, device);
    if (!minorNumber)
        return NVML_ERROR_INVALID_ARGUMENT;
    *minorNumber = (unsigned)i;
    return NVML_SUCCESS;
}

static nvmlReturn_t pci_info(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    DEV_OR_INVALID(i, device);
    if (!pci)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned dom = 0, bus = 0, d = 0, fn = 0;
    sscanf(fake_cfg()->pci_bus_id[i], "%x:%x:%x.%x", &dom, &bus, &d, &fn);
    memset(pci, 0, sizeof *pci);
    pci->domain = dom;
    pci->bus = bus;
    pci->device = d;
    pci->pciDeviceId = 0x1eb810de;
    pci->pciSubSystemId = 0x12a210de;
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.%X", dom, bus, d, fn);
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.%X", dom, bus, d, fn);
    return NVML_SUCCESS;
}

FORWARD3(nvmlDeviceGetPciInfo, nvmlDeviceGetPciInfo_v2, nvmlDeviceGetPciInfo_v3, ENTER_INIT,
         (nvmlDevice_t device, nvmlPciInfo_t *pci), (void)0, pci_info(device, pci))

API nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor)
{
    ENTER_INIT();
    DEV_OR_INVALID(i, device);
    (void)i;
    if (!major || !minor)
        return NVML_ERROR_INVALID_ARGUMENT;
    *major = fake_cfg()->cc_major;
    *minor = fake_cfg()->cc_minor;
    return NVML_SUCCESS;
}

API nvmlDeviceGetNumGpuCores(nvmlDevice_t device, unsigned int *numCores)
{
    ENTER_INIT();
    DEV_OR_INVALID(i, device);
    if (!numCores)
        return NVML_ERROR_INVALID_ARGUMENT;
    *numCores = (unsigned)fake_cfg()->sm_count[i] * 64;
    return NVML_SUCCESS;
}

API nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    ENTER_INIT();
    DEV_OR_INVALID(i, device);
    if (!memory)
        return NVML_ERROR_INVALID_ARGUMENT;
    fake_reap_dead();
    struct fake_dev *d = &fake_state()->dev[i];
    uint64_t used = atomic_load(&d->used);
    memory->total = d->total;
    memory->used = used;
    memory->free = used >= d->total ? 0 : d->total - used;
    return NVML_SUCCESS;
}

API nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    ENTER_INIT();
    DEV_OR_INVALID(i, device);
    if (!memory)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (memory->version != nvmlMemory_v2)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    fake_reap_dead();
    struct fake_dev *d = &fake_state()->dev[i];
    uint64_t used = atomic_load(&d->used);
    memory->total = d->total;
    memory->reserved = 0;
    memory->used = used;
    memory->free = used >= d->total ? 0 : d->total - used;
    return NVML_SUCCESS;
}

API nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization)
{
    ENTER_INIT();
    DEV_OR_INVALID(i, device);
    if (!utilization)
        return NVML_ERROR_INVALID_ARGUMENT;
    utilization->gpu = fake_util_percent(i, fake_cfg()->util_window_ns);
    utilization->memory = 0;
    return NVML_SUCCESS;
}

/* Processes with memory on, or work submitted to, the device. */
static unsigned list_procs(int dev, int32_t *pids, uint64_t *used, unsigned max)
{
    fake_reap_dead();
    struct fake_state *s = fake_state();
    unsigned n = 0;
    for (int k = 0; k < FAKE_MAX_PROCS; k++) {
        struct fake_proc *p = &s->procs[k];
        int32_t pid = atomic_load(&s->proc_pid[k]);
        if (pid <= 0)
            continue;
        uint64_t u = atomic_load(&p->dev[dev].used);
        if (u == 0 && atomic_load(&p->dev[dev].sched) == 0)
            continue;
        if (n < max) {
            pids[n] = pid;
            used[n] = u;
        }
        n++;
    }
    return n;
}

#define PROC_LIST_FN(fname, type)                                                                  \
    API fname(nvmlDevice_t device, unsigned int *infoCount, type *infos)                           \
    {                                                                                              \
        ENTER_INIT();                                                                              \
        DEV_OR_INVALID(i, device);                                                                 \
        if (!infoCount)                                                                            \
            return NVML_ERROR_INVALID_ARGUMENT;                                                    \
        int32_t pids[FAKE_MAX_PROCS];                                                              \
        uint64_t used[FAKE_MAX_PROCS];                                                             \
        unsigned n = list_procs(i, pids, used, FAKE_MAX_PROCS);                                    \
        if (!infos || *infoCount < n) {                                                            \
            *infoCount = n;                                                                        \
            return n == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;                           \
        }                                                                                          \
        for (unsigned k = 0; k < n; k++) {                                                         \
            memset(&infos[k], 0, sizeof infos[k]);                                                 \
            infos[k].pid = (unsigned)pids[k];                                                      \
            infos[k].usedGpuMemory = used[k];                                                      \
            PROC_LIST_MIG(infos[k]);                                                               \
        }                                                                                          \
        *infoCount = n;                                                                            \
        return NVML_SUCCESS;                                                                       \
    }

#define PROC_LIST_MIG(x) (void)0
PROC_LIST_FN(nvmlDeviceGetComputeRunningProcesses, nvmlProcessInfo_v1_t)
PROC_LIST_FN(nvmlDeviceGetGraphicsRunningProcesses, nvmlProcessInfo_v1_t)
#undef PROC_LIST_MIG
#define PROC_LIST_MIG(x) ((x).gpuInstanceId = 0xffffffffu, (x).computeInstanceId = 0xffffffffu)
PROC_LIST_FN(nvmlDeviceGetComputeRunningProcesses_v2, nvmlProcessInfo_v2_t)
PROC_LIST_FN(nvmlDeviceGetGraphicsRunningProcesses_v2, nvmlProcessInfo_v2_t)
PROC_LIST_FN(nvmlDeviceGetComputeRunningProcesses_v3, nvmlProcessInfo_t)
PROC_LIST_FN(nvmlDeviceGetGraphicsRunningProcesses_v3, nvmlProcessInfo_t)

static uint64_t realtime_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000;
}

/* One sample per process that submitted work: smUtil = percent of [since, now] covered by the
 * work it submitted, since = lastSeenTimeStamp (CLOCK_REALTIME microseconds) or, when that is 0
 * or older than the window, now - FAKE_CUDA_UTIL_WINDOW_MS. */
API nvmlDeviceGetProcessUtilization(nvmlDevice_t device, nvmlProcessUtilizationSample_t *utilization,
                                    unsigned int *processSamplesCount, unsigned long long lastSeenTimeStamp)
{
    ENTER_INIT();
    DEV_OR_INVALID(i, device);
    if (!processSamplesCount)
        return NVML_ERROR_INVALID_ARGUMENT;
    fake_reap_dead();
    struct fake_state *s = fake_state();
    uint64_t now_mono = fake_now_ns(), now_rt = realtime_us();
    uint64_t window = fake_cfg()->util_window_ns;
    uint64_t since = now_mono > window ? now_mono - window : 0;
    if (lastSeenTimeStamp && lastSeenTimeStamp < now_rt && (now_rt - lastSeenTimeStamp) * 1000ULL < window)
        since = now_mono - (now_rt - lastSeenTimeStamp) * 1000ULL;
    unsigned n = 0;
    for (int k = 0; k < FAKE_MAX_PROCS; k++) {
        struct fake_proc *p = &s->procs[k];
        int32_t pid = atomic_load(&s->proc_pid[k]);
        if (pid <= 0 || atomic_load(&p->dev[i].sched) == 0)
            continue;
        if (utilization && n < *processSamplesCount) {
            nvmlProcessUtilizationSample_t *x = &utilization[n];
            memset(x, 0, sizeof *x);
            x->pid = (unsigned)pid;
            x->timeStamp = now_rt;
            x->smUtil = fake_proc_util_percent(p, i, since, now_mono);
        }
        n++;
    }
    if (!utilization || *processSamplesCount < n) {
        *processSamplesCount = n;
        return n ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_ERROR_NOT_FOUND;
    }
    *processSamplesCount = n;
    return n ? NVML_SUCCESS : NVML_ERROR_NOT_FOUND;
}
