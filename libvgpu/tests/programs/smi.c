/* smi: the NVML view of the devices, like nvidia-smi's memory and utilization columns.
 *
 *   smi [--device=D] [--v2] [--processes] [--csv]
 *
 * Per GPU i: gpu<i>.name, .uuid, .pci_bus_id, .memory.total/.used/.free (bytes, from
 * nvmlDeviceGetMemoryInfo, or _v2 with --v2, which adds .memory.reserved),
 * .utilization.gpu (percent), and with --processes .processes=<pid>:<bytes>,... from
 * nvmlDeviceGetComputeRunningProcesses (v3) and .process_util=<pid>:<smUtil>,... from
 * nvmlDeviceGetProcessUtilization. --csv prints "index, memory.total [MiB], memory.used [MiB],
 * memory.free [MiB]" rows instead, as nvidia-smi --query-gpu would. */
#include "common.h"

#include <nvml.h>

#define NK(...) (snprintf(k, sizeof k, __VA_ARGS__), k)

static void nvml_check(nvmlReturn_t r, const char *what)
{
    if (r != NVML_SUCCESS)
        die("%s: %s", what, nvmlErrorString(r));
}

int main(int argc, char **argv)
{
    opts_init(argc, argv);
    nvml_check(nvmlInit(), "nvmlInit");
    unsigned n = 0;
    nvml_check(nvmlDeviceGetCount(&n), "nvmlDeviceGetCount");
    char drv[96];
    nvml_check(nvmlSystemGetDriverVersion(drv, sizeof drv), "nvmlSystemGetDriverVersion");
    int cudav = 0;
    nvml_check(nvmlSystemGetCudaDriverVersion(&cudav), "nvmlSystemGetCudaDriverVersion");
    bool csv = opt_flag("csv");
    if (csv) {
        printf("index, memory.total [MiB], memory.used [MiB], memory.free [MiB]\n");
    } else {
        kv("driver_version", "%s", drv);
        kv("cuda_version", "%d", cudav);
        kv("count", "%u", n);
    }
    long long only = opt_int("device", -1);
    for (unsigned i = 0; i < n; i++) {
        if (only >= 0 && (long long)i != only)
            continue;
        char k[96], buf[256];
        nvmlDevice_t d;
        nvml_check(nvmlDeviceGetHandleByIndex(i, &d), "nvmlDeviceGetHandleByIndex");
        unsigned long long total, used, free_, reserved = 0;
        if (opt_flag("v2")) {
            nvmlMemory_v2_t m = {0};
            m.version = nvmlMemory_v2;
            nvml_check(nvmlDeviceGetMemoryInfo_v2(d, &m), "nvmlDeviceGetMemoryInfo_v2");
            total = m.total, used = m.used, free_ = m.free, reserved = m.reserved;
        } else {
            nvmlMemory_t m;
            nvml_check(nvmlDeviceGetMemoryInfo(d, &m), "nvmlDeviceGetMemoryInfo");
            total = m.total, used = m.used, free_ = m.free;
        }
        if (csv) {
            printf("%u, %llu MiB, %llu MiB, %llu MiB\n", i, total >> 20, used >> 20, free_ >> 20);
            continue;
        }
        nvml_check(nvmlDeviceGetName(d, buf, sizeof buf), "nvmlDeviceGetName");
        kv(NK("gpu%u.name", i), "%s", buf);
        nvml_check(nvmlDeviceGetUUID(d, buf, sizeof buf), "nvmlDeviceGetUUID");
        kv(NK("gpu%u.uuid", i), "%s", buf);
        nvmlPciInfo_t pci;
        nvml_check(nvmlDeviceGetPciInfo(d, &pci), "nvmlDeviceGetPciInfo");
        kv(NK("gpu%u.pci_bus_id", i), "%s", pci.busId);
        kv(NK("gpu%u.memory.total", i), "%llu", total);
        kv(NK("gpu%u.memory.used", i), "%llu", used);
        kv(NK("gpu%u.memory.free", i), "%llu", free_);
        if (opt_flag("v2"))
            kv(NK("gpu%u.memory.reserved", i), "%llu", reserved);
        nvmlUtilization_t u;
        nvml_check(nvmlDeviceGetUtilizationRates(d, &u), "nvmlDeviceGetUtilizationRates");
        kv(NK("gpu%u.utilization.gpu", i), "%u", u.gpu);
        if (opt_flag("processes")) {
            nvmlProcessInfo_t procs[64];
            unsigned cnt = 64;
            nvml_check(nvmlDeviceGetComputeRunningProcesses(d, &cnt, procs), "nvmlDeviceGetComputeRunningProcesses");
            char list[4096] = "";
            size_t off = 0;
            for (unsigned p = 0; p < cnt && off < sizeof list - 64; p++)
                off += (size_t)snprintf(list + off, sizeof list - off, "%s%u:%llu", p ? "," : "", procs[p].pid,
                                        procs[p].usedGpuMemory);
            kv(NK("gpu%u.processes", i), "%s", list);
            nvmlProcessUtilizationSample_t s[64];
            unsigned sc = 64;
            nvmlReturn_t r = nvmlDeviceGetProcessUtilization(d, s, &sc, 0);
            off = 0;
            list[0] = 0;
            for (unsigned p = 0; r == NVML_SUCCESS && p < sc && off < sizeof list - 64; p++)
                off += (size_t)snprintf(list + off, sizeof list - off, "%s%u:%u", p ? "," : "", s[p].pid, s[p].smUtil);
            kv(NK("gpu%u.process_util", i), "%s", list);
        }
    }
    nvmlShutdown();
    return 0;
}
