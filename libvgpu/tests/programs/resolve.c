/* resolve: look driver entry points up by every route an application or cudart uses, and
 * print which object and symbol each route handed out.
 *
 *   resolve [--names=cuMemAlloc,cuLaunchKernel,...] [--versions=3020,11030,12000,12050]
 *           [--flags=0,1,2] [--routes=direct,dlsym,default,next,procaddr,procaddr_v2]
 *
 * Output keys (value "<object basename>:<symbol>", "<object>:?" when the address is not an
 * exported symbol, or "null"):
 *   direct.<name>                the address the program is linked to (a fixed set of names)
 *   dlsym.<name>                 dlsym(dlopen("libcuda.so.1"), name)   (for nvml*: libnvidia-ml.so.1)
 *   default.<name>, next.<name>  dlsym(RTLD_DEFAULT / RTLD_NEXT, name)
 *   procaddr.<name>.<ver>.<flags>     cuGetProcAddress (11.3-12.4 signature), plus .rc
 *   procaddr_v2.<name>.<ver>.<flags>  cuGetProcAddress_v2 (12.5+), plus .rc and .status
 * cuGetProcAddress itself is found the way cudart finds it: dlsym on the libcuda handle. */
#include "common.h"

#include <nvml.h>

static const char *describe(const void *p)
{
    static char buf[512];
    if (!p)
        return "null";
    Dl_info info;
    if (!dladdr(p, &info) || !info.dli_fname)
        return "unknown:?";
    const char *base = strrchr(info.dli_fname, '/');
    base = base ? base + 1 : info.dli_fname;
    if (info.dli_sname && info.dli_saddr == p)
        snprintf(buf, sizeof buf, "%s:%s", base, info.dli_sname);
    else
        snprintf(buf, sizeof buf, "%s:?", base);
    return buf;
}

struct direct {
    const char *name;
    void *addr;
};

/* names as an application compiled against cuda.h/nvml.h references them */
static const struct direct g_direct[] = {
    {"cuInit", (void *)cuInit},
    {"cuDriverGetVersion", (void *)cuDriverGetVersion},
    {"cuMemAlloc", (void *)cuMemAlloc}, /* cuMemAlloc_v2 */
    {"cuMemFree", (void *)cuMemFree},
    {"cuMemGetInfo", (void *)cuMemGetInfo},
    {"cuDeviceTotalMem", (void *)cuDeviceTotalMem},
    {"cuMemAllocManaged", (void *)cuMemAllocManaged},
    {"cuMemAllocPitch", (void *)cuMemAllocPitch},
    {"cuMemAllocAsync", (void *)cuMemAllocAsync},
    {"cuMemFreeAsync", (void *)cuMemFreeAsync},
    {"cuMemAllocFromPoolAsync", (void *)cuMemAllocFromPoolAsync},
    {"cuMemCreate", (void *)cuMemCreate},
    {"cuMemRelease", (void *)cuMemRelease},
    {"cuLaunchKernel", (void *)cuLaunchKernel},
    {"cuLaunchKernelEx", (void *)cuLaunchKernelEx},
    {"cuLaunchCooperativeKernel", (void *)cuLaunchCooperativeKernel},
    {"cuGraphLaunch", (void *)cuGraphLaunch},
    {"cuGetProcAddress", (void *)cuGetProcAddress}, /* cuGetProcAddress_v2 */
    {"cuCtxCreate", (void *)cuCtxCreate},
    {"cuDevicePrimaryCtxRetain", (void *)cuDevicePrimaryCtxRetain},
    {"nvmlInit", (void *)nvmlInit},
    {"nvmlDeviceGetMemoryInfo", (void *)nvmlDeviceGetMemoryInfo},
    {"nvmlDeviceGetComputeRunningProcesses", (void *)nvmlDeviceGetComputeRunningProcesses},
};

typedef CUresult (*gpa_v1_t)(const char *, void **, int, cuuint64_t);
typedef CUresult (*gpa_v2_t)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);

static bool route_on(const char *r)
{
    const char *routes = opt_str("routes", "direct,dlsym,default,next,procaddr,procaddr_v2");
    size_t n = strlen(r);
    for (const char *p = routes; p && *p;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == n && strncmp(p, r, n) == 0)
            return true;
        p = c ? c + 1 : NULL;
    }
    return false;
}

/* split a comma list into at most `max` items of up to 127 characters */
static int split(const char *list, char items[][128], int max)
{
    int n = 0;
    for (const char *p = list; p && *p && n < max;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        snprintf(items[n++], 128, "%.*s", (int)(len < 127 ? len : 127), p);
        p = c ? c + 1 : NULL;
    }
    return n;
}

int main(int argc, char **argv)
{
    opts_init(argc, argv);
    const char *names = opt_str(
        "names", "cuInit,cuGetProcAddress,cuMemAlloc,cuMemFree,cuMemGetInfo,cuDeviceTotalMem,cuMemAllocManaged,"
                 "cuMemAllocPitch,cuMemAllocAsync,cuMemFreeAsync,cuMemAllocFromPoolAsync,cuMemCreate,cuMemRelease,"
                 "cuLaunchKernel,cuLaunchKernelEx,cuLaunchCooperativeKernel,cuGraphLaunch,cuCtxCreate,"
                 "cuMemcpyHtoD,cuMemAdvise,cuMemPrefetchAsync,cuDeviceGetUuid,cuGraphInstantiate");
    const char *versions = opt_str("versions", "3020,11030,12000,12050");
    const char *flags = opt_str("flags", "0,1,2");

    void *cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    void *nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!cuda)
        die("dlopen libcuda.so.1: %s", dlerror());
    kv("libcuda", "%s", describe(dlsym(cuda, "cuInit")));

    if (route_on("direct"))
        for (size_t i = 0; i < sizeof g_direct / sizeof g_direct[0]; i++) {
            char k[160];
            snprintf(k, sizeof k, "direct.%s", g_direct[i].name);
            kv(k, "%s", describe(g_direct[i].addr));
        }

    gpa_v1_t gpa = (gpa_v1_t)dlsym(cuda, "cuGetProcAddress");
    gpa_v2_t gpa2 = (gpa_v2_t)dlsym(cuda, "cuGetProcAddress_v2");
    /* cudart initializes the driver before asking for entry points */
    CUresult (*init)(unsigned) = (CUresult (*)(unsigned))dlsym(cuda, "cuInit");
    if (init)
        kv("init_result", "%d", (int)init(0));

    static char nm[256][128], vs[16][128], fs[8][128];
    int nn = split(names, nm, 256), nv = split(versions, vs, 16), nf = split(flags, fs, 8);
    for (int a = 0; a < nn; a++) {
        const char *name = nm[a];
        char k[512];
        void *lib = strncmp(name, "nvml", 4) == 0 ? nvml : cuda;
        if (route_on("dlsym")) {
            snprintf(k, sizeof k, "dlsym.%.127s", name);
            kv(k, "%s", describe(lib ? dlsym(lib, name) : NULL));
        }
        if (route_on("default")) {
            snprintf(k, sizeof k, "default.%.127s", name);
            kv(k, "%s", describe(dlsym(RTLD_DEFAULT, name)));
        }
        if (route_on("next")) {
            snprintf(k, sizeof k, "next.%.127s", name);
            kv(k, "%s", describe(dlsym(RTLD_NEXT, name)));
        }
        for (int b = 0; b < nv; b++) {
            int ver = atoi(vs[b]);
            for (int c = 0; c < nf; c++) {
                cuuint64_t fl = strtoull(fs[c], NULL, 0);
                void *fn = NULL;
                if (route_on("procaddr") && gpa) {
                    CUresult r = gpa(name, &fn, ver, fl);
                    snprintf(k, sizeof k, "procaddr.%.127s.%d.%.16s", name, ver, fs[c]);
                    kv(k, "%s", describe(fn));
                    snprintf(k, sizeof k, "procaddr.%.127s.%d.%.16s.rc", name, ver, fs[c]);
                    kv(k, "%d", (int)r);
                }
                if (route_on("procaddr_v2") && gpa2) {
                    CUdriverProcAddressQueryResult st = (CUdriverProcAddressQueryResult)-1;
                    fn = NULL;
                    CUresult r = gpa2(name, &fn, ver, fl, &st);
                    snprintf(k, sizeof k, "procaddr_v2.%.127s.%d.%.16s", name, ver, fs[c]);
                    kv(k, "%s", describe(fn));
                    snprintf(k, sizeof k, "procaddr_v2.%.127s.%d.%.16s.rc", name, ver, fs[c]);
                    kv(k, "%d", (int)r);
                    snprintf(k, sizeof k, "procaddr_v2.%.127s.%d.%.16s.status", name, ver, fs[c]);
                    kv(k, "%d", (int)st);
                }
            }
        }
    }
    return 0;
}
