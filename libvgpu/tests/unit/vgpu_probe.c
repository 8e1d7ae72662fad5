/* Scriptable CUDA/NVML driver client for the libvgpu pytest suites (tests/libvgpu/test_*.py).
 * Loads libcuda.so.1 like cudart (dlopen + dlsym, or cuGetProcAddress) and runs the commands
 * given as arguments, printing one "key=value ..." line per command.
 *
 *   vgpu_probe [--via=dlsym|procaddr|default] CMD [ARGS] [CMD [ARGS]] ...
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <dlfcn.h>
#include <nvml.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void *g_cuda, *g_nvml;
static const char *g_via = "dlsym";
static char **g_argv0;

static void *sym(const char *name)
{
    void *p = NULL;
    if (strcmp(g_via, "default") == 0) {
        p = dlsym(RTLD_DEFAULT, name);
    } else if (strcmp(g_via, "procaddr") == 0 && strncmp(name, "cu", 2) == 0) {
        CUresult (*gpa)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *) =
            (CUresult(*)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *))
                dlsym(g_cuda, "cuGetProcAddress_v2");
        char base[128];
        snprintf(base, sizeof base, "%s", name);
        char *v = strstr(base, "_v2");
        if (v != NULL && v[3] == '\0')
            *v = '\0';
        if (gpa != NULL && gpa(base, &p, 12090, CU_GET_PROC_ADDRESS_DEFAULT, NULL) != CUDA_SUCCESS)
            p = NULL;
    } else {
        p = dlsym(strncmp(name, "nvml", 4) == 0 ? g_nvml : g_cuda, name);
    }
    if (p == NULL) {
        fprintf(stderr, "probe: symbol %s not found\n", name);
        exit(3);
    }
    return p;
}

#define F(type, name) ((type)sym(#name))

typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
typedef CUresult (*free_t)(CUdeviceptr);
typedef CUresult (*info_t)(size_t *, size_t *);

#define MAXP 100000
static CUdeviceptr g_ptr[MAXP];
static size_t g_np;

static uint64_t parse_size(const char *s)
{
    char *end;
    uint64_t v = strtoull(s, &end, 10);
    switch (*end) {
    case 'k': v <<= 10; break;
    case 'm': v <<= 20; break;
    case 'g': v <<= 30; break;
    default: break;
    }
    return v;
}

static void meminfo(const char *tag)
{
    size_t f = 0, t = 0;
    CUresult rc = F(info_t, cuMemGetInfo_v2)(&f, &t);
    printf("%s rc=%d free=%zu total=%zu used=%zu\n", tag, rc, f, t, t - f);
}

static const char *owner(void *p)
{
    Dl_info di;
    if (p == NULL)
        return "null";
    if (dladdr(p, &di) == 0 || di.dli_fname == NULL)
        return "unknown";
    const char *s = strrchr(di.dli_fname, '/');
    return s ? s + 1 : di.dli_fname;
}

struct thr {
    int n;
    size_t size;
    int fails;
};

static void *thr_main(void *arg)
{
    struct thr *t = arg;
    CUcontext ctx;
    F(CUresult(*)(CUcontext *, CUdevice), cuDevicePrimaryCtxRetain)(&ctx, 0);
    F(CUresult(*)(CUcontext), cuCtxSetCurrent)(ctx);
    alloc_t a = F(alloc_t, cuMemAlloc_v2);
    free_t fr = F(free_t, cuMemFree_v2);
    for (int i = 0; i < t->n; i++) {
        CUdeviceptr p;
        if (a(&p, t->size) != CUDA_SUCCESS) {
            t->fails++;
            continue;
        }
        if (fr(p) != CUDA_SUCCESS)
            t->fails++;
    }
    return NULL;
}

static void set_ctx(int dev)
{
    CUcontext ctx;
    CUresult rc = F(CUresult(*)(CUcontext *, CUdevice), cuDevicePrimaryCtxRetain)(&ctx, dev);
    if (rc == CUDA_SUCCESS)
        rc = F(CUresult(*)(CUcontext), cuCtxSetCurrent)(ctx);
    printf("ctx dev=%d rc=%d\n", dev, rc);
}

static int run(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        const char *c = argv[i];
#define ARG() (i + 1 < argc ? argv[++i] : (fprintf(stderr, "missing arg for %s\n", c), exit(2), ""))
        if (strcmp(c, "init") == 0) {
            printf("init rc=%d\n", F(CUresult(*)(unsigned), cuInit)(0));
        } else if (strcmp(c, "uuid") == 0) {
            int dev = atoi(ARG());
            CUuuid u;
            CUresult rc = ((CUresult(*)(CUuuid *, CUdevice))dlsym(g_cuda, "cuDeviceGetUuid"))(&u, dev);
            const unsigned char *b = (const unsigned char *)u.bytes;
            printf("uuid dev=%d rc=%d uuid=GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
                   "%02x%02x%02x%02x%02x%02x\n",
                   dev, rc, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
                   b[12], b[13], b[14], b[15]);
        } else if (strcmp(c, "ctx") == 0) {
            set_ctx(atoi(ARG()));
        } else if (strcmp(c, "alloc") == 0) {
            CUdeviceptr p = 0;
            CUresult rc = F(alloc_t, cuMemAlloc_v2)(&p, parse_size(ARG()));
            if (rc == CUDA_SUCCESS && g_np < MAXP)
                g_ptr[g_np++] = p;
            printf("alloc rc=%d ptr=%llu\n", rc, (unsigned long long)p);
        } else if (strcmp(c, "allocmax") == 0) { /* allocate CHUNK until failure */
            uint64_t chunk = parse_size(ARG()), n = 0;
            CUdeviceptr p;
            CUresult rc;
            while ((rc = F(alloc_t, cuMemAlloc_v2)(&p, chunk)) == CUDA_SUCCESS && g_np < MAXP) {
                g_ptr[g_np++] = p;
                n++;
            }
            printf("allocmax n=%llu rc=%d\n", (unsigned long long)n, rc);
        } else if (strcmp(c, "free") == 0) {
            size_t k = (size_t)atoi(ARG());
            printf("free rc=%d\n", k < g_np ? (int)F(free_t, cuMemFree_v2)(g_ptr[k]) : -1);
            if (k < g_np)
                g_ptr[k] = 0;
        } else if (strcmp(c, "ismanaged") == 0) { /* the driver's CU_POINTER_ATTRIBUTE_IS_MANAGED of ptr K */
            size_t k = (size_t)atoi(ARG());
            int managed = -1;
            CUresult rc = k < g_np ? F(CUresult(*)(void *, CUpointer_attribute, CUdeviceptr), cuPointerGetAttribute)(
                                         &managed, CU_POINTER_ATTRIBUTE_IS_MANAGED, g_ptr[k])
                                   : CUDA_ERROR_INVALID_VALUE;
            printf("ismanaged rc=%d managed=%d\n", rc, managed);
        } else if (strcmp(c, "freeptr") == 0) {
            printf("freeptr rc=%d\n", F(free_t, cuMemFree_v2)((CUdeviceptr)strtoull(ARG(), NULL, 0)));
        } else if (strcmp(c, "freeall") == 0) {
            int bad = 0;
            for (size_t k = 0; k < g_np; k++)
                bad += g_ptr[k] != 0 && F(free_t, cuMemFree_v2)(g_ptr[k]) != CUDA_SUCCESS;
            g_np = 0;
            printf("freeall bad=%d\n", bad);
        } else if (strcmp(c, "pitch") == 0) {
            size_t w = parse_size(ARG()), h = parse_size(ARG()), pitch = 0;
            CUdeviceptr p = 0;
            CUresult rc = F(CUresult(*)(CUdeviceptr *, size_t *, size_t, size_t, unsigned),
                            cuMemAllocPitch_v2)(&p, &pitch, w, h, 4);
            if (rc == CUDA_SUCCESS)
                g_ptr[g_np++] = p;
            printf("pitch rc=%d pitch=%zu bytes=%zu\n", rc, pitch, pitch * h);
        } else if (strcmp(c, "managed") == 0) {
            CUdeviceptr p = 0;
            CUresult rc = F(CUresult(*)(CUdeviceptr *, size_t, unsigned), cuMemAllocManaged)(
                &p, parse_size(ARG()), CU_MEM_ATTACH_GLOBAL);
            if (rc == CUDA_SUCCESS)
                g_ptr[g_np++] = p;
            printf("managed rc=%d\n", rc);
        } else if (strcmp(c, "async") == 0 || strcmp(c, "pool") == 0) {
            CUdeviceptr p = 0;
            size_t sz = parse_size(ARG());
            CUresult rc;
            if (c[0] == 'a') {
                rc = F(CUresult(*)(CUdeviceptr *, size_t, CUstream), cuMemAllocAsync)(&p, sz, NULL);
            } else {
                CUmemoryPool pool = NULL;
                rc = F(CUresult(*)(CUmemoryPool *, CUdevice), cuDeviceGetDefaultMemPool)(&pool, 0);
                if (rc == CUDA_SUCCESS)
                    rc = F(CUresult(*)(CUdeviceptr *, size_t, CUmemoryPool, CUstream),
                           cuMemAllocFromPoolAsync)(&p, sz, pool, NULL);
            }
            if (rc == CUDA_SUCCESS)
                g_ptr[g_np++] = p;
            printf("%s rc=%d\n", c, rc);
        } else if (strcmp(c, "freeasync") == 0) {
            size_t k = (size_t)atoi(ARG());
            printf("freeasync rc=%d\n",
                   k < g_np ? (int)F(CUresult(*)(CUdeviceptr, CUstream), cuMemFreeAsync)(g_ptr[k], NULL) : -1);
        } else if (strcmp(c, "vmm") == 0 || strcmp(c, "vmmhost") == 0) {
            size_t sz = parse_size(ARG());
            CUmemAllocationProp prop;
            memset(&prop, 0, sizeof prop);
            prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
            prop.location.type = c[3] == 'h' ? CU_MEM_LOCATION_TYPE_HOST : CU_MEM_LOCATION_TYPE_DEVICE;
            prop.location.id = c[3] == 'h' ? 0 : atoi(ARG());
            CUmemGenericAllocationHandle h = 0;
            CUresult rc = F(CUresult(*)(CUmemGenericAllocationHandle *, size_t,
                                        const CUmemAllocationProp *, unsigned long long),
                            cuMemCreate)(&h, sz, &prop, 0);
            if (rc == CUDA_SUCCESS)
                g_ptr[g_np++] = (CUdeviceptr)h;
            printf("%s rc=%d\n", c, rc);
        } else if (strcmp(c, "release") == 0) {
            size_t k = (size_t)atoi(ARG());
            printf("release rc=%d\n",
                   F(CUresult(*)(CUmemGenericAllocationHandle), cuMemRelease)(
                       (CUmemGenericAllocationHandle)g_ptr[k]));
        } else if (strcmp(c, "array") == 0) {
            CUDA_ARRAY_DESCRIPTOR d = {parse_size(ARG()), parse_size(ARG()), CU_AD_FORMAT_FLOAT, 1};
            CUarray a = NULL;
            CUresult rc = F(CUresult(*)(CUarray *, const CUDA_ARRAY_DESCRIPTOR *), cuArrayCreate_v2)(&a, &d);
            if (rc == CUDA_SUCCESS)
                g_ptr[g_np++] = (CUdeviceptr)(uintptr_t)a;
            printf("array rc=%d\n", rc);
        } else if (strcmp(c, "array3d") == 0) {
            CUDA_ARRAY3D_DESCRIPTOR d;
            memset(&d, 0, sizeof d);
            d.Width = parse_size(ARG());
            d.Height = parse_size(ARG());
            d.Depth = parse_size(ARG());
            d.Format = CU_AD_FORMAT_UNSIGNED_INT8;
            d.NumChannels = 4;
            CUarray a = NULL;
            CUresult rc = F(CUresult(*)(CUarray *, const CUDA_ARRAY3D_DESCRIPTOR *), cuArray3DCreate_v2)(&a, &d);
            if (rc == CUDA_SUCCESS)
                g_ptr[g_np++] = (CUdeviceptr)(uintptr_t)a;
            printf("array3d rc=%d\n", rc);
        } else if (strcmp(c, "arraydestroy") == 0) {
            size_t k = (size_t)atoi(ARG());
            printf("arraydestroy rc=%d\n",
                   F(CUresult(*)(CUarray), cuArrayDestroy)((CUarray)(uintptr_t)g_ptr[k]));
        } else if (strcmp(c, "mipmap") == 0) {
            CUDA_ARRAY3D_DESCRIPTOR d;
            memset(&d, 0, sizeof d);
            d.Width = parse_size(ARG());
            d.Height = parse_size(ARG());
            d.Format = CU_AD_FORMAT_FLOAT;
            d.NumChannels = 1;
            unsigned levels = (unsigned)atoi(ARG());
            CUmipmappedArray m = NULL;
            CUresult rc = F(CUresult(*)(CUmipmappedArray *, const CUDA_ARRAY3D_DESCRIPTOR *, unsigned),
                            cuMipmappedArrayCreate)(&m, &d, levels);
            if (rc == CUDA_SUCCESS)
                g_ptr[g_np++] = (CUdeviceptr)(uintptr_t)m;
            printf("mipmap rc=%d\n", rc);
        } else if (strcmp(c, "mipmapdestroy") == 0) {
            size_t k = (size_t)atoi(ARG());
            printf("mipmapdestroy rc=%d\n", F(CUresult(*)(CUmipmappedArray), cuMipmappedArrayDestroy)(
                                                (CUmipmappedArray)(uintptr_t)g_ptr[k]));
        } else if (strcmp(c, "meminfo") == 0) {
            meminfo("meminfo");
        } else if (strcmp(c, "meminfo-null") == 0) {
            size_t f = 0, t = 0;
            info_t fn = F(info_t, cuMemGetInfo_v2);
            CUresult r1 = fn(NULL, &t), r2 = fn(&f, NULL), r3 = fn(NULL, NULL);
            printf("meminfo-null rc1=%d rc2=%d rc3=%d free=%zu total=%zu\n", r1, r2, r3, f, t);
        } else if (strcmp(c, "totalmem") == 0) {
            size_t b = 0;
            CUresult rc = F(CUresult(*)(size_t *, CUdevice), cuDeviceTotalMem_v2)(&b, atoi(ARG()));
            printf("totalmem rc=%d bytes=%zu\n", rc, b);
        } else if (strcmp(c, "nvml") == 0) {
            unsigned idx = (unsigned)atoi(ARG());
            F(nvmlReturn_t(*)(void), nvmlInit_v2)();
            nvmlDevice_t dev;
            nvmlReturn_t r = F(nvmlReturn_t(*)(unsigned, nvmlDevice_t *), nvmlDeviceGetHandleByIndex_v2)(idx, &dev);
            nvmlMemory_t m = {0};
            nvmlMemory_v2_t m2;
            memset(&m2, 0, sizeof m2);
            m2.version = nvmlMemory_v2;
            nvmlReturn_t r1 = F(nvmlReturn_t(*)(nvmlDevice_t, nvmlMemory_t *), nvmlDeviceGetMemoryInfo)(dev, &m);
            nvmlReturn_t r2 =
                F(nvmlReturn_t(*)(nvmlDevice_t, nvmlMemory_v2_t *), nvmlDeviceGetMemoryInfo_v2)(dev, &m2);
            printf("nvml rc=%d rc1=%d total=%llu free=%llu used=%llu rc2=%d total2=%llu free2=%llu "
                   "used2=%llu reserved2=%llu\n",
                   r, r1, m.total, m.free, m.used, r2, m2.total, m2.free, m2.used, m2.reserved);
        } else if (strcmp(c, "threads") == 0) {
            int nt = atoi(ARG()), n = atoi(ARG());
            size_t sz = parse_size(ARG());
            pthread_t th[64];
            struct thr t[64];
            for (int k = 0; k < nt && k < 64; k++) {
                t[k] = (struct thr){n, sz, 0};
                pthread_create(&th[k], NULL, thr_main, &t[k]);
            }
            int fails = 0;
            for (int k = 0; k < nt && k < 64; k++) {
                pthread_join(th[k], NULL);
                fails += t[k].fails;
            }
            printf("threads fails=%d\n", fails);
        } else if (strcmp(c, "dlsym") == 0) {
            const char *n = ARG();
            void *p = dlsym(g_cuda, n);
            printf("dlsym name=%s owner=%s\n", n, owner(p));
        } else if (strcmp(c, "dlsym-nvml") == 0) {
            const char *n = ARG();
            printf("dlsym-nvml name=%s owner=%s\n", n, owner(dlsym(g_nvml, n)));
        } else if (strcmp(c, "dlsym-default") == 0) {
            const char *n = ARG();
            printf("dlsym-default name=%s owner=%s\n", n, owner(dlsym(RTLD_DEFAULT, n)));
        } else if (strcmp(c, "dlsym-next") == 0) {
            const char *n = ARG();
            void *a = dlsym(RTLD_NEXT, n), *b = dlsym(RTLD_NEXT, n);
            printf("dlsym-next name=%s same=%d owner=%s\n", n, a == b && a != NULL, owner(a));
        } else if (strcmp(c, "procaddr") == 0) {
            const char *n = ARG();
            int ver = atoi(ARG());
            cuuint64_t flags = strtoull(ARG(), NULL, 0);
            void *p = NULL, *p1 = NULL;
            CUdriverProcAddressQueryResult st = (CUdriverProcAddressQueryResult)-1;
            CUresult rc = ((CUresult(*)(const char *, void **, int, cuuint64_t,
                                        CUdriverProcAddressQueryResult *))dlsym(g_cuda, "cuGetProcAddress_v2"))(
                n, &p, ver, flags, &st);
            CUresult rc1 =
                ((CUresult(*)(const char *, void **, int, cuuint64_t))dlsym(g_cuda, "cuGetProcAddress"))(
                    n, &p1, ver, flags);
            Dl_info di;
            const char *sname = (p && dladdr(p, &di) && di.dli_sname) ? di.dli_sname : "?";
            const char *sname1 = (p1 && dladdr(p1, &di) && di.dli_sname) ? di.dli_sname : "?";
            printf("procaddr name=%s rc=%d status=%d owner=%s sym=%s rc1=%d owner1=%s sym1=%s\n", n,
                   rc, (int)st, owner(p), sname, rc1, owner(p1), sname1);
        } else if (strcmp(c, "fork") == 0) { /* fork: child runs the rest, parent waits */
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) {
                g_np = 0;
                printf("child pid=%d\n", (int)getpid());
                continue;
            }
            int st;
            waitpid(pid, &st, 0);
            printf("parent child_status=%d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            return 0;
        } else if (strcmp(c, "exec") == 0) { /* exec the probe with the remaining commands */
            fflush(stdout);
            char **nargv = calloc((size_t)(argc - i + 2), sizeof *nargv);
            nargv[0] = g_argv0[0];
            char via[64];
            snprintf(via, sizeof via, "--via=%s", g_via);
            nargv[1] = via;
            for (int k = i + 1; k < argc; k++)
                nargv[k - i + 1] = argv[k];
            execv("/proc/self/exe", nargv);
            perror("execv");
            return 4;
        } else if (strcmp(c, "launch") == 0) { /* launch N kernels of GX blocks; ns per launch */
            long n = atol(ARG());
            unsigned gx = (unsigned)atoi(ARG());
            CUresult (*lk)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                           unsigned, CUstream, void **, void **) =
                F(CUresult(*)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                              unsigned, CUstream, void **, void **),
                  cuLaunchKernel);
            struct timespec a, b;
            int bad = 0;
            clock_gettime(CLOCK_MONOTONIC, &a);
            for (long k = 0; k < n; k++)
                bad += lk(NULL, gx, 1, 1, 128, 1, 1, 0, NULL, NULL, NULL) != CUDA_SUCCESS;
            clock_gettime(CLOCK_MONOTONIC, &b);
            double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / (double)n;
            printf("launch n=%ld bad=%d ns=%.1f\n", n, bad, ns);
        } else if (strcmp(c, "sleep") == 0) {
            usleep((useconds_t)atoi(ARG()) * 1000);
        } else if (strcmp(c, "ready") == 0) {
            printf("ready\n");
            fflush(stdout);
        } else if (strcmp(c, "hold") == 0) {
            fflush(stdout);
            for (;;)
                pause();
        } else {
            fprintf(stderr, "probe: unknown command %s\n", c);
            return 2;
        }
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv)
{
    g_argv0 = argv;
    int first = 1;
    if (argc > 1 && strncmp(argv[1], "--via=", 6) == 0) {
        g_via = argv[1] + 6;
        first = 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    g_cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    g_nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (g_cuda == NULL) {
        fprintf(stderr, "probe: %s\n", dlerror());
        return 3;
    }
    return run(argc - first, argv + first);
}
