/* stress: threads x iterations of alloc/free, optionally in several processes racing for the
 * same device, reporting the most memory ever held at once.
 *
 *   stress [--procs=P] [--threads=T] [--iters=N] [--size=S] [--max-size=S] [--hold=K]
 *          [--path=v2|async|vmm] [--device=D] [--seed=X]
 *
 * Each thread keeps up to K live allocations (default 4): on every iteration it frees a random
 * one when it holds K (or when the last allocation failed) and otherwise allocates
 * --size bytes (or a random size in [--size, --max-size]). Processes are forked before cuInit.
 *
 * Prints allocs, frees, ooms, errors (other failures), max_held (most bytes held at once by
 * all threads of all processes, as counted by the program), max_fake_used (the most the fake
 * device reported in use at any instant observed after an allocation; only with the fake),
 * final_fake_used (after everything was freed) and elapsed_s. Exit 0 unless errors > 0. */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>

struct shared {
    _Atomic uint64_t held, max_held, max_fake;
    _Atomic uint64_t allocs, frees, ooms, errors;
};

static struct shared *g_sh;
static int g_dev, g_threads, g_keep;
static long long g_iters;
static uint64_t g_size, g_max_size;
static const char *g_path;
static CUcontext g_ctx;
static CUstream g_stream;

static void atomic_max(_Atomic uint64_t *m, uint64_t v)
{
    uint64_t cur = atomic_load(m);
    while (cur < v && !atomic_compare_exchange_weak(m, &cur, v)) {
    }
}

struct live {
    CUdeviceptr ptr;
    CUmemGenericAllocationHandle h;
    uint64_t size;
};

static CUresult do_alloc(struct live *l)
{
    if (strcmp(g_path, "async") == 0)
        return cuMemAllocAsync(&l->ptr, l->size, g_stream);
    if (strcmp(g_path, "vmm") == 0) {
        CUmemAllocationProp prop = {0};
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = g_dev;
        l->size = (l->size + (2u << 20) - 1) / (2u << 20) * (2u << 20);
        return cuMemCreate(&l->h, l->size, &prop, 0);
    }
    return cuMemAlloc(&l->ptr, l->size);
}

static CUresult do_free(struct live *l)
{
    if (strcmp(g_path, "async") == 0)
        return cuMemFreeAsync(l->ptr, g_stream);
    if (strcmp(g_path, "vmm") == 0)
        return cuMemRelease(l->h);
    return cuMemFree(l->ptr);
}

/* Every worker starts its loop at once: on a loaded machine a thread created first could otherwise finish all
 * its iterations before the next one exists, and the run would never see contention. */
static pthread_barrier_t g_start;

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    CK(cuCtxSetCurrent(g_ctx));
    pthread_barrier_wait(&g_start);
    struct live *live = calloc((size_t)g_keep, sizeof *live);
    int n = 0;
    bool last_failed = false;
    for (long long it = 0; it < g_iters; it++) {
        if (n > 0 && (n == g_keep || last_failed || rand_r(&seed) % 3 == 0)) {
            int k = (int)(rand_r(&seed) % (unsigned)n);
            uint64_t sz = live[k].size;
            atomic_fetch_sub(&g_sh->held, sz); /* before the free: never over-count */
            CUresult r = do_free(&live[k]);
            if (r != CUDA_SUCCESS) {
                fprintf(stderr, "free: %s\n", err_name(r));
                atomic_fetch_add(&g_sh->errors, 1);
            }
            atomic_fetch_add(&g_sh->frees, 1);
            live[k] = live[--n];
            last_failed = false;
            continue;
        }
        struct live l = {0};
        l.size = g_size;
        if (g_max_size > g_size)
            l.size += (uint64_t)rand_r(&seed) % (g_max_size - g_size + 1);
        CUresult r = do_alloc(&l);
        if (r == CUDA_SUCCESS) {
            uint64_t h = atomic_fetch_add(&g_sh->held, l.size) + l.size;
            atomic_max(&g_sh->max_held, h);
            uint64_t used;
            if (fake_memory(g_dev, &used, NULL))
                atomic_max(&g_sh->max_fake, used);
            atomic_fetch_add(&g_sh->allocs, 1);
            live[n++] = l;
            last_failed = false;
        } else if (r == CUDA_ERROR_OUT_OF_MEMORY) {
            atomic_fetch_add(&g_sh->ooms, 1);
            last_failed = true;
        } else {
            fprintf(stderr, "alloc: %s\n", err_name(r));
            atomic_fetch_add(&g_sh->errors, 1);
            last_failed = true;
        }
    }
    while (n > 0) {
        atomic_fetch_sub(&g_sh->held, live[n - 1].size);
        if (do_free(&live[--n]) != CUDA_SUCCESS)
            atomic_fetch_add(&g_sh->errors, 1);
        atomic_fetch_add(&g_sh->frees, 1);
    }
    free(live);
    return NULL;
}

static void run_process(unsigned seed)
{
    g_ctx = setup_ctx(g_dev);
    if (strcmp(g_path, "async") == 0)
        CK(cuStreamCreate(&g_stream, CU_STREAM_NON_BLOCKING));
    pthread_t *t = calloc((size_t)g_threads, sizeof *t);
    pthread_barrier_init(&g_start, NULL, (unsigned)g_threads);
    for (int i = 0; i < g_threads; i++)
        pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(seed * 7919u + (unsigned)i));
    for (int i = 0; i < g_threads; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&g_start);
    free(t);
    if (g_stream)
        CK(cuStreamSynchronize(g_stream));
}

int main(int argc, char **argv)
{
    opts_init(argc, argv);
    int procs = (int)opt_int("procs", 1);
    g_threads = (int)opt_int("threads", 4);
    g_iters = opt_int("iters", 1000);
    g_size = opt_size("size", "1m");
    g_max_size = opt_size("max-size", "0");
    g_keep = (int)opt_int("hold", 4);
    g_path = opt_str("path", "v2");
    g_dev = (int)opt_int("device", 0);
    unsigned seed = (unsigned)opt_int("seed", 1);
    if (g_keep < 1)
        g_keep = 1;

    g_sh = mmap(NULL, sizeof *g_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_sh == MAP_FAILED)
        die("mmap");
    uint64_t t0 = now_ns();
    if (procs <= 1) {
        run_process(seed);
    } else {
        pid_t *pids = calloc((size_t)procs, sizeof *pids);
        for (int p = 0; p < procs; p++) {
            pids[p] = fork();
            if (pids[p] == 0) {
                run_process(seed + (unsigned)p * 104729u);
                fflush(stdout);
                _exit(0);
            }
        }
        for (int p = 0; p < procs; p++) {
            int st;
            waitpid(pids[p], &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                atomic_fetch_add(&g_sh->errors, 1);
        }
        free(pids);
        CK(cuInit(0));
    }
    double elapsed = (double)(now_ns() - t0) / 1e9;
    kv("allocs", "%" PRIu64, atomic_load(&g_sh->allocs));
    kv("frees", "%" PRIu64, atomic_load(&g_sh->frees));
    kv("ooms", "%" PRIu64, atomic_load(&g_sh->ooms));
    kv("errors", "%" PRIu64, atomic_load(&g_sh->errors));
    kv("max_held", "%" PRIu64, atomic_load(&g_sh->max_held));
    kv("elapsed_s", "%.3f", elapsed);
    uint64_t used;
    if (fake_memory(g_dev, &used, NULL)) {
        kv("max_fake_used", "%" PRIu64, atomic_load(&g_sh->max_fake));
        kv("final_fake_used", "%" PRIu64, used);
    }
    return atomic_load(&g_sh->errors) ? 1 : 0;
}
