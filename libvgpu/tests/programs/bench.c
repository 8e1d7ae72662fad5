/* bench: tight loops timed with clock_gettime, for tests/bench/bench_libvgpu.py.  Run the same
 * command with and without LD_PRELOAD=libvgpu.so: the difference is the interception cost.
 *
 *   bench --op=launch [--via=direct|procaddr] [--iters=N] [--rounds=R] [--blocks=B]
 *   bench --op=alloc  [--live=N] [--live-size=S] [--size=S] [--iters=N] [--rounds=R]
 *   bench --op=init   [--size=S]
 * common: [--cpu=K] (pin to CPU K) [--start-at=NS] (sleep until CLOCK_MONOTONIC NS first, so
 *         processes started one after another begin together) [--warmup=N]
 *
 * launch: R rounds of N cuLaunchKernel calls (B blocks, default 1, on the legacy stream) through
 *   the directly linked symbol or a pointer from cuGetProcAddress (how cudart calls it).
 * alloc: keeps N allocations of --live-size bytes live (not timed), then R rounds of N pairs
 *   cuMemAlloc(--size) + cuMemFree.
 * Both print ns_min / ns_med / ns_max (per call or pair, over rounds), cpu_ns (process CPU time
 *   per op over all rounds) and ops.
 * init: cuInit + cuDeviceGet + primary context retain/set current + cuMemAlloc(--size): prints
 *   init_ns (that sequence, wall), init_cpu_ns (its CPU time), end_ns (CLOCK_MONOTONIC at its
 *   end) and late_ns (how late after --start-at it began). */
#include "common.h"

#include <sched.h>

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(double *per_op, int rounds, uint64_t cpu, uint64_t ops)
{
    qsort(per_op, (size_t)rounds, sizeof *per_op, cmp_double);
    kv("ns_min", "%.2f", per_op[0]);
    kv("ns_med", "%.2f", per_op[rounds / 2]);
    kv("ns_max", "%.2f", per_op[rounds - 1]);
    kv("cpu_ns", "%.2f", ops ? (double)cpu / (double)ops : 0.0);
    kv("ops", "%llu", (unsigned long long)ops);
}

static void wait_start(void)
{
    long long at = opt_int("start-at", 0);
    if (at <= 0)
        return;
    struct timespec ts = {(time_t)(at / 1000000000LL), (long)(at % 1000000000LL)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
    uint64_t now = now_ns();
    kv("late_ns", "%lld", (long long)now - at);
}

typedef CUresult (*launch_fn)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                              CUstream, void **, void **);

static int bench_launch(long long iters, int rounds, double *per_op)
{
    setup_ctx(0);
    CUmodule mod;
    CUfunction fn;
    static const char image[] = "fake-module";
    CK(cuModuleLoadData(&mod, image));
    CK(cuModuleGetFunction(&fn, mod, "bench"));
    launch_fn lk = cuLaunchKernel;
    if (strcmp(opt_str("via", "direct"), "procaddr") == 0) {
        void *p = NULL;
        CK(cuGetProcAddress("cuLaunchKernel", &p, 12000, CU_GET_PROC_ADDRESS_DEFAULT, NULL));
        lk = (launch_fn)p;
    }
    unsigned blocks = (unsigned)opt_int("blocks", 1);
    long long warm = opt_int("warmup", iters);
    for (long long i = 0; i < warm; i++)
        CK(lk(fn, blocks, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
    CK(cuCtxSynchronize());
    uint64_t c0 = cpu_ns();
    for (int r = 0; r < rounds; r++) {
        uint64_t t0 = now_ns();
        for (long long i = 0; i < iters; i++) {
            CUresult rc = lk(fn, blocks, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL);
            if (__builtin_expect(rc != CUDA_SUCCESS, 0))
                die("cuLaunchKernel -> %s", err_name(rc));
        }
        uint64_t t1 = now_ns();
        per_op[r] = (double)(t1 - t0) / (double)iters;
    }
    uint64_t c1 = cpu_ns();
    CK(cuCtxSynchronize());
    report(per_op, rounds, c1 - c0, (uint64_t)iters * (uint64_t)rounds);
    return 0;
}

static int bench_alloc(long long iters, int rounds, double *per_op)
{
    setup_ctx(0);
    long long live = opt_int("live", 0);
    uint64_t live_size = opt_size("live-size", "512");
    uint64_t size = opt_size("size", "4096");
    CUdeviceptr *held = NULL;
    if (live > 0) {
        held = malloc((size_t)live * sizeof *held);
        if (held == NULL)
            die("out of host memory for %lld pointers", live);
        for (long long i = 0; i < live; i++)
            CK(cuMemAlloc(&held[i], live_size));
    }
    long long warm = opt_int("warmup", iters);
    for (long long i = 0; i < warm; i++) {
        CUdeviceptr p;
        CK(cuMemAlloc(&p, size));
        CK(cuMemFree(p));
    }
    wait_start(); /* concurrent runs: every process allocates its live set first */
    uint64_t c0 = cpu_ns();
    for (int r = 0; r < rounds; r++) {
        uint64_t t0 = now_ns();
        for (long long i = 0; i < iters; i++) {
            CUdeviceptr p;
            CUresult rc = cuMemAlloc(&p, size);
            if (__builtin_expect(rc != CUDA_SUCCESS, 0))
                die("cuMemAlloc(%llu) -> %s", (unsigned long long)size, err_name(rc));
            rc = cuMemFree(p);
            if (__builtin_expect(rc != CUDA_SUCCESS, 0))
                die("cuMemFree -> %s", err_name(rc));
        }
        uint64_t t1 = now_ns();
        per_op[r] = (double)(t1 - t0) / (double)iters;
    }
    uint64_t c1 = cpu_ns();
    kv("end_ns", "%llu", (unsigned long long)now_ns());
    report(per_op, rounds, c1 - c0, (uint64_t)iters * (uint64_t)rounds);
    size_t free_b = 0, total_b = 0;
    CK(cuMemGetInfo(&free_b, &total_b));
    kv("mem_used", "%llu", (unsigned long long)(total_b - free_b));
    for (long long i = 0; i < live; i++)
        CK(cuMemFree(held[i]));
    free(held);
    return 0;
}

static int bench_init(void)
{
    uint64_t size = opt_size("size", "1m");
    wait_start();
    uint64_t t0 = now_ns(), c0 = cpu_ns();
    CK(cuInit(0));
    CUdevice d;
    CK(cuDeviceGet(&d, 0));
    CUcontext ctx;
    CK(cuDevicePrimaryCtxRetain(&ctx, d));
    CK(cuCtxSetCurrent(ctx));
    CUdeviceptr p;
    CK(cuMemAlloc(&p, size));
    uint64_t t1 = now_ns(), c1 = cpu_ns();
    kv("init_ns", "%llu", (unsigned long long)(t1 - t0));
    kv("init_cpu_ns", "%llu", (unsigned long long)(c1 - c0));
    kv("end_ns", "%llu", (unsigned long long)t1);
    CK(cuMemFree(p));
    return 0;
}

int main(int argc, char **argv)
{
    opts_init(argc, argv);
    const char *op = opt_str("op", "launch");
    long long iters = opt_int("iters", 100000);
    int rounds = (int)opt_int("rounds", 15);
    long long cpu = opt_int("cpu", -1);
    if (iters <= 0 || rounds <= 0 || rounds > 100000)
        die("--iters and --rounds must be positive (rounds <= 100000)");
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET((int)cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0)
            die("sched_setaffinity(%lld): %s", cpu, strerror(errno));
    }
    double *per_op = calloc((size_t)rounds, sizeof *per_op);
    if (per_op == NULL)
        die("out of memory");
    int rc;
    if (strcmp(op, "launch") == 0) {
        wait_start();
        rc = bench_launch(iters, rounds, per_op);
    } else if (strcmp(op, "alloc") == 0) {
        rc = bench_alloc(iters, rounds, per_op);
    } else if (strcmp(op, "init") == 0) {
        rc = bench_init();
    } else {
        die("--op=%s: expected launch, alloc or init", op);
    }
    free(per_op);
    return rc;
}
