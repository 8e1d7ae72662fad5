/* hamireg: scenarios of HAMi-core bugs (docs/design/hami-core.md, "Where HAMi-core breaks") that need more than a
 * scripted sequence of driver calls; driven by tests/libvgpu/test_hami_regressions.py.
 *
 *   hamireg --mode=M [--size=S] [--n=N] [--threads=T] [--forks=F] [--hold=SECONDS|-1]
 *
 * Modes (every "used" below is cuMemGetInfo's total - free on device 0, i.e. libvgpu's view of
 * the claim when a limit is set; "phys" is the fake driver's own view of device 0):
 *   untracked    frees pointers libvgpu never tracked: one from the legacy 32-bit cuMemAlloc
 *                (not wrapped), a bogus address (sync and async), a double free (sync and
 *                async); prints <case>.rc and <case>.used after each
 *   clone        allocates --size, then clone()s a child without CLONE_VM (no atfork handlers
 *                run) that queries, allocates and frees 16 MiB and leaves with exit() (atexit
 *                handlers run, as in a real program); prints parent.used_after_child, prints
 *                ready=1, holds (--hold), frees and prints parent.used_final
 *   forklock     --threads threads allocate, free, query and launch in a loop while the main
 *                thread forks --forks times; each child initializes, allocates and frees 64
 *                blocks, launches, under alarm(5), and exits 0 (a deadlock ends it by SIGALRM)
 *   asyncloop    --n rounds of stream-ordered alloc + free of --size, rotating through
 *                cuMemAllocAsync on the NULL stream, on a created stream, and
 *                cuMemAllocFromPoolAsync, freed by cuMemFreeAsync or (every 3rd) cuMemFree
 *   sideeffects  sets umask 027 and a handler on every catchable signal, then initializes CUDA,
 *                allocates (creating the region), launches, queries NVML; prints umask and the
 *                signals whose disposition or blocked state changed
 *   nogpa        with a driver lacking cuGetProcAddress_v2: what dlsym hands out for it, what
 *                calling libvgpu's export returns, and an allocation through cuGetProcAddress
 */
#include "common.h"

#include <nvml.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define MIB (1ULL << 20)

static uint64_t used_now(void)
{
    size_t f = 0, t = 0;
    if (cuMemGetInfo(&f, &t) != CUDA_SUCCESS)
        return UINT64_MAX;
    return (uint64_t)(t - f);
}

static uint64_t phys_now(void)
{
    uint64_t u = 0;
    fake_memory(0, &u, NULL);
    return u;
}

static void report(const char *tag, CUresult r)
{
    char k[64];
    snprintf(k, sizeof k, "%s.rc", tag);
    kv(k, "%d", (int)r);
    snprintf(k, sizeof k, "%s.used", tag);
    kv(k, "%" PRIu64, used_now());
}

/* ---- untracked ---------------------------------------------------------------------------- */

static int mode_untracked(void)
{
    setup_ctx(0);
    CUdeviceptr a = 0;
    CK(cuMemAlloc(&a, MIB));
    report("tracked", CUDA_SUCCESS);

    /* the legacy 32-bit entry point is not wrapped: the driver knows this pointer, we do not */
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    CUresult (*v1)(unsigned int *, unsigned int) =
        lib ? (CUresult(*)(unsigned int *, unsigned int))dlsym(lib, "cuMemAlloc") : NULL;
    if (!v1)
        die("legacy cuMemAlloc not found");
    unsigned int p32 = 0;
    report("legacy_alloc", v1(&p32, 2 * MIB));
    uint64_t phys_before = phys_now();
    report("free_untracked", cuMemFree((CUdeviceptr)p32));
    kv("free_untracked.phys_released", "%" PRIu64, phys_before - phys_now());

    const CUdeviceptr bogus = (CUdeviceptr)0xdead0000ULL;
    report("free_bogus", cuMemFree(bogus));
    report("freeasync_bogus", cuMemFreeAsync(bogus, NULL));

    report("free_tracked", cuMemFree(a));
    report("free_double", cuMemFree(a));

    CUdeviceptr b = 0;
    CK(cuMemAllocAsync(&b, 3 * MIB, NULL));
    report("async_alloc", CUDA_SUCCESS);
    report("freeasync_tracked", cuMemFreeAsync(b, NULL));
    CK(cuCtxSynchronize());
    report("freeasync_double", cuMemFreeAsync(b, NULL));
    return 0;
}

/* ---- clone -------------------------------------------------------------------------------- */

static char g_stack[256 * 1024] __attribute__((aligned(16)));

static int clone_child(void *arg)
{
    (void)arg;
    size_t f = 0, t = 0;
    CUdevice d;
    CUcontext ctx;
    CUresult r = cuInit(0); /* the fake treats a new pid as a new process */
    if (r == CUDA_SUCCESS)
        r = cuDeviceGet(&d, 0);
    if (r == CUDA_SUCCESS)
        r = cuDevicePrimaryCtxRetain(&ctx, d);
    if (r == CUDA_SUCCESS)
        r = cuCtxSetCurrent(ctx);
    if (r == CUDA_SUCCESS)
        r = cuMemGetInfo(&f, &t);
    CUdeviceptr p = 0;
    if (r == CUDA_SUCCESS)
        r = cuMemAlloc(&p, 16 * MIB);
    if (r == CUDA_SUCCESS) {
        kv("child.used_during", "%" PRIu64, used_now());
        r = cuMemFree(p);
    }
    kv("child.rc", "%d", (int)r);
    exit(r == CUDA_SUCCESS ? 0 : 1); /* exit(), not _exit(): atexit handlers must run */
}

static int mode_clone(void)
{
    uint64_t size = opt_size("size", "64m");
    setup_ctx(0);
    CUdeviceptr mine = 0;
    CK(cuMemAlloc(&mine, size));
    kv("parent.used_before", "%" PRIu64, used_now());
    fflush(stdout);
    pid_t pid = clone(clone_child, g_stack + sizeof g_stack, SIGCHLD, NULL);
    if (pid < 0)
        die("clone: %s", strerror(errno));
    int st = 0;
    if (waitpid(pid, &st, 0) < 0)
        die("waitpid: %s", strerror(errno));
    kv("child.exit", "%d", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    kv("parent.used_after_child", "%" PRIu64, used_now());
    kv("ready", "1");
    hold(opt_double("hold", 0));
    CK(cuMemFree(mine));
    kv("parent.used_final", "%" PRIu64, used_now());
    return 0;
}

/* ---- forklock ----------------------------------------------------------------------------- */

static atomic_bool g_stop;
static CUcontext g_ctx;
static CUfunction g_fn;

struct worker {
    pthread_t th;
    long ops;
    int fails;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    if (cuCtxSetCurrent(g_ctx) != CUDA_SUCCESS) {
        w->fails++;
        return NULL;
    }
    while (!atomic_load(&g_stop)) {
        CUdeviceptr p = 0;
        size_t f, t;
        if (cuMemAlloc(&p, 64 * 1024) != CUDA_SUCCESS || cuMemFree(p) != CUDA_SUCCESS)
            w->fails++;
        if (cuMemGetInfo(&f, &t) != CUDA_SUCCESS)
            w->fails++;
        if (cuLaunchKernel(g_fn, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL) != CUDA_SUCCESS)
            w->fails++;
        w->ops++;
    }
    return NULL;
}

static int fork_child(void)
{
    alarm(5); /* a deadlocked child dies of SIGALRM instead of hanging the test */
    CUdevice d;
    CUcontext ctx;
    CUdeviceptr p = 0;
    CUmodule mod;
    CUfunction fn;
    size_t f, t;
    static const char image[] = "fake-module";
    CUresult r = cuInit(0);
    if (r == CUDA_SUCCESS)
        r = cuDeviceGet(&d, 0);
    if (r == CUDA_SUCCESS)
        r = cuDevicePrimaryCtxRetain(&ctx, d);
    if (r == CUDA_SUCCESS)
        r = cuCtxSetCurrent(ctx);
    /* many live blocks: their records spread over every shard of the allocation table */
    CUdeviceptr many[64] = {0};
    for (int i = 0; i < 64 && r == CUDA_SUCCESS; i++)
        r = cuMemAlloc(&many[i], 64 * 1024);
    for (int i = 0; i < 64 && r == CUDA_SUCCESS; i++)
        r = cuMemFree(many[i]);
    if (r == CUDA_SUCCESS)
        r = cuMemAlloc(&p, MIB);
    if (r == CUDA_SUCCESS)
        r = cuMemGetInfo(&f, &t);
    if (r == CUDA_SUCCESS)
        r = cuModuleLoadData(&mod, image);
    if (r == CUDA_SUCCESS)
        r = cuModuleGetFunction(&fn, mod, "spin");
    if (r == CUDA_SUCCESS)
        r = cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL);
    if (r == CUDA_SUCCESS)
        r = cuMemFree(p);
    return r == CUDA_SUCCESS ? 0 : 1;
}

static int mode_forklock(void)
{
    int nthreads = (int)opt_int("threads", 4), forks = (int)opt_int("forks", 40);
    if (nthreads < 1 || nthreads > 64)
        die("--threads must be 1..64");
    g_ctx = setup_ctx(0);
    CUmodule mod;
    static const char image[] = "fake-module";
    CK(cuModuleLoadData(&mod, image));
    CK(cuModuleGetFunction(&g_fn, mod, "spin"));
    struct worker w[64];
    memset(w, 0, sizeof w);
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&w[i].th, NULL, worker_main, &w[i]) != 0)
            die("pthread_create");
    usleep(20000);
    int ok = 0, hung = 0, failed = 0;
    for (int i = 0; i < forks; i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0)
            die("fork: %s", strerror(errno));
        if (pid == 0)
            _exit(fork_child());
        int st = 0;
        if (waitpid(pid, &st, 0) < 0)
            die("waitpid: %s", strerror(errno));
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
            ok++;
        else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
            hung++;
        else
            failed++;
        usleep(1000);
    }
    atomic_store(&g_stop, true);
    long ops = 0;
    int fails = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(w[i].th, NULL);
        ops += w[i].ops;
        fails += w[i].fails;
    }
    kv("forks.ok", "%d", ok);
    kv("forks.hung", "%d", hung);
    kv("forks.failed", "%d", failed);
    kv("workers.ops", "%ld", ops);
    kv("workers.fails", "%d", fails);
    kv("used", "%" PRIu64, used_now());
    return 0;
}

/* ---- asyncloop ---------------------------------------------------------------------------- */

static int mode_asyncloop(void)
{
    long n = (long)opt_int("n", 1000);
    uint64_t size = opt_size("size", "300m");
    setup_ctx(0);
    CUstream s;
    CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUmemoryPool pool;
    CK(cuDeviceGetDefaultMemPool(&pool, 0));
    long alloc_fails = 0, free_fails = 0, first_fail = -1;
    uint64_t peak = 0;
    for (long i = 0; i < n; i++) {
        CUstream st = i % 3 == 0 ? NULL : s;
        CUdeviceptr p = 0;
        CUresult r = i % 3 == 2 ? cuMemAllocFromPoolAsync(&p, size, pool, st) : cuMemAllocAsync(&p, size, st);
        if (r != CUDA_SUCCESS) {
            if (first_fail < 0)
                first_fail = i;
            alloc_fails++;
            continue;
        }
        uint64_t u = used_now();
        peak = u > peak ? u : peak;
        r = i % 3 == 1 ? cuMemFree(p) : cuMemFreeAsync(p, st);
        free_fails += r != CUDA_SUCCESS;
    }
    CK(cuStreamSynchronize(s));
    kv("alloc_fails", "%ld", alloc_fails);
    kv("first_fail", "%ld", first_fail);
    kv("free_fails", "%ld", free_fails);
    kv("peak", "%" PRIu64, peak);
    kv("used", "%" PRIu64, used_now());
    return 0;
}

/* ---- sideeffects -------------------------------------------------------------------------- */

static void on_signal(int sig)
{
    (void)sig;
}

/* SA_RESTORER is set by the C library itself and not exported by <signal.h> */
#define FLAG_RESTORER 0x04000000

static bool same_action(const struct sigaction *a, const struct sigaction *b)
{
    if (a->sa_handler != b->sa_handler || (a->sa_flags & ~FLAG_RESTORER) != (b->sa_flags & ~FLAG_RESTORER))
        return false;
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&a->sa_mask, s) != sigismember(&b->sa_mask, s))
            return false;
    return true;
}

static int mode_sideeffects(void)
{
    /* dispositions as the process found them (libvgpu was loaded before main) */
    char buf[512] = "";
    for (int s = 1; s < SIGRTMIN; s++) {
        struct sigaction sa;
        if (sigaction(s, NULL, &sa) == 0 && sa.sa_handler != SIG_DFL && s != SIGKILL && s != SIGSTOP)
            snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%d,", s);
    }
    kv("at_load_nondefault", "%s", buf);

    umask(027);
    struct sigaction before[NSIG];
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP || (s >= 32 && s < SIGRTMIN))
            continue; /* glibc-reserved real-time signals cannot be set */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaddset(&sa.sa_mask, SIGUSR2);
        sa.sa_flags = SA_RESTART;
        if (sigaction(s, &sa, NULL) != 0)
            die("sigaction %d: %s", s, strerror(errno));
        sigaction(s, NULL, &before[s]);
    }
    sigset_t mask_before, mask_after;
    pthread_sigmask(SIG_SETMASK, NULL, &mask_before);

    setup_ctx(0);
    CUdeviceptr p = 0;
    CK(cuMemAlloc(&p, MIB));
    kv("used", "%" PRIu64, used_now());
    CUmodule mod;
    CUfunction fn;
    static const char image[] = "fake-module";
    CK(cuModuleLoadData(&mod, image));
    CK(cuModuleGetFunction(&fn, mod, "spin"));
    for (int i = 0; i < 20; i++)
        CK(cuLaunchKernel(fn, 4, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
    CK(cuCtxSynchronize());
    nvmlDevice_t dev;
    nvmlMemory_t m;
    if (nvmlInit_v2() != NVML_SUCCESS || nvmlDeviceGetHandleByIndex_v2(0, &dev) != NVML_SUCCESS ||
        nvmlDeviceGetMemoryInfo(dev, &m) != NVML_SUCCESS)
        die("nvml failed");
    CK(cuMemFree(p));

    mode_t um = umask(0);
    umask(um);
    kv("umask", "%03o", (unsigned)um);
    buf[0] = 0;
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP || (s >= 32 && s < SIGRTMIN))
            continue;
        struct sigaction now;
        sigaction(s, NULL, &now);
        if (!same_action(&before[s], &now))
            snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%d,", s);
    }
    kv("changed_handlers", "%s", buf);
    pthread_sigmask(SIG_SETMASK, NULL, &mask_after);
    buf[0] = 0;
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&mask_before, s) != sigismember(&mask_after, s))
            snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%d,", s);
    kv("changed_mask", "%s", buf);
    const char *cache = getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE");
    struct stat stt;
    if (cache && stat(cache, &stt) == 0)
        kv("region_mode", "%03o", (unsigned)(stt.st_mode & 0777));
    return 0;
}

/* ---- nogpa -------------------------------------------------------------------------------- */

typedef CUresult (*gpa_v1_t)(const char *, void **, int, cuuint64_t);
typedef CUresult (*gpa_v2_t)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);

static int mode_nogpa(void)
{
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib)
        die("dlopen libcuda.so.1: %s", dlerror());
    kv("driver_has_v2", "%d", dlsym(lib, "cuGetProcAddress_v2") != NULL);
    gpa_v2_t v2 = (gpa_v2_t)dlsym(RTLD_DEFAULT, "cuGetProcAddress_v2");
    kv("default_has_v2", "%d", v2 != NULL);
    if (v2) {
        void *p = (void *)&p;
        CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SUCCESS;
        CUresult r = v2("cuMemAlloc", &p, 12000, 0, &st);
        kv("v2.rc", "%d", (int)r);
    }
    gpa_v1_t v1 = (gpa_v1_t)dlsym(lib, "cuGetProcAddress");
    if (!v1)
        die("cuGetProcAddress not found");
    CK(((CUresult(*)(unsigned))dlsym(lib, "cuInit"))(0));
    CUdevice d;
    CUcontext ctx;
    CK(cuDeviceGet(&d, 0));
    CK(cuDevicePrimaryCtxRetain(&ctx, d));
    CK(cuCtxSetCurrent(ctx));
    void *pa = NULL, *pf = NULL, *pi = NULL;
    CK(v1("cuMemAlloc", &pa, 12000, 0));
    CK(v1("cuMemFree", &pf, 12000, 0));
    CK(v1("cuMemGetInfo", &pi, 12000, 0));
    /* asking for cuGetProcAddress itself at a version where _v2 would exist */
    void *pg = NULL;
    kv("v1_self.rc", "%d", (int)v1("cuGetProcAddress", &pg, 12090, 0));
    CUdeviceptr p = 0;
    CUresult r = ((CUresult(*)(CUdeviceptr *, size_t))pa)(&p, 8 * MIB);
    kv("alloc.rc", "%d", (int)r);
    size_t f = 0, t = 0;
    CK(((CUresult(*)(size_t *, size_t *))pi)(&f, &t));
    kv("alloc.used", "%" PRIu64, (uint64_t)(t - f));
    kv("alloc.total", "%" PRIu64, (uint64_t)t);
    r = ((CUresult(*)(CUdeviceptr))pf)(p);
    kv("free.rc", "%d", (int)r);
    CK(((CUresult(*)(size_t *, size_t *))pi)(&f, &t));
    kv("free.used", "%" PRIu64, (uint64_t)(t - f));
    return 0;
}

int main(int argc, char **argv)
{
    opts_init(argc, argv);
    const char *mode = opt_str("mode", "");
    if (strcmp(mode, "untracked") == 0)
        return mode_untracked();
    if (strcmp(mode, "clone") == 0)
        return mode_clone();
    if (strcmp(mode, "forklock") == 0)
        return mode_forklock();
    if (strcmp(mode, "asyncloop") == 0)
        return mode_asyncloop();
    if (strcmp(mode, "sideeffects") == 0)
        return mode_sideeffects();
    if (strcmp(mode, "nogpa") == 0)
        return mode_nogpa();
    die("unknown --mode=%s (untracked, clone, forklock, asyncloop, sideeffects, nogpa)", mode);
}
