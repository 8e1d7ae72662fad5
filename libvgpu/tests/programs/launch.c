/* launch: launch kernels of --blocks blocks in a loop for --seconds, synchronizing every
 * --sync-every launches, and report the utilization achieved.
 *
 *   launch [--blocks=B] [--seconds=T] [--sync-every=N] [--path=P] [--via=direct|procaddr]
 *          [--device=D] [--stream] [--max-launches=N] [--sleep-us=U] [--warmup=S]
 *          [--interval=S]
 *
 * Paths: kernel (cuLaunchKernel), ptsz (cuLaunchKernel_ptsz), ex (cuLaunchKernelEx),
 * coop (cuLaunchCooperativeKernel), graph (a captured graph of one kernel, cuGraphLaunch).
 * --sleep-us idles the host for U microseconds after every synchronization (host-side work).
 * --via=procaddr resolves the launch function with cuGetProcAddress (PTDS flag for ptsz).
 *
 * Prints launches, wall_s, launch_ns_avg (host time per launch call), busy_s (the fake's busy
 * time of the device during the run, all processes), util (busy_s / wall_s), work_s (the
 * simulated cost of this process's kernels: launches*blocks*FAKE_CUDA_NS_PER_BLOCK/SMs) and
 * work_util (work_s / wall_s). With --warmup=S (S < T) also post_wall_s, post_util and
 * post_work_util: the same over [S, T] only (after a warm-up of S seconds); with --interval=I
 * (and warmup) the device utilization of every I-second interval after the warm-up in
 * post_samples (comma list) and their mean/sd in post_mean, post_sd. Exit 0 unless a launch
 * fails. */
#include "common.h"

CUresult CUDAAPI cuLaunchKernel_ptsz(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                     unsigned, CUstream, void **, void **);

typedef CUresult (*launch_fn)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                              CUstream, void **, void **);

int main(int argc, char **argv)
{
    opts_init(argc, argv);
    unsigned blocks = (unsigned)opt_int("blocks", 80);
    double seconds = opt_double("seconds", 1.0);
    long long sync_every = opt_int("sync-every", 1);
    long long max_launches = opt_int("max-launches", -1);
    const char *path = opt_str("path", "kernel");
    const char *via = opt_str("via", "direct");
    int dev = (int)opt_int("device", 0);
    long long sleep_us = opt_int("sleep-us", 0);
    double warmup = opt_double("warmup", 0.0);
    double interval = opt_double("interval", 0.0);

    setup_ctx(dev);
    CUstream stream = NULL;
    if (opt_flag("stream") || strcmp(path, "graph") == 0)
        CK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
    CUmodule mod;
    CUfunction fn;
    static const char image[] = "fake-module";
    CK(cuModuleLoadData(&mod, image));
    CK(cuModuleGetFunction(&fn, mod, "spin"));

    launch_fn lk = cuLaunchKernel;
    if (strcmp(path, "ptsz") == 0)
        lk = cuLaunchKernel_ptsz;
    if (strcmp(via, "procaddr") == 0) {
        void *p = NULL;
        cuuint64_t fl = strcmp(path, "ptsz") == 0 ? CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM : 0;
        CK(cuGetProcAddress("cuLaunchKernel", &p, 12000, fl, NULL));
        lk = (launch_fn)p;
    }
    CUgraphExec exec = NULL;
    if (strcmp(path, "graph") == 0) {
        CUgraph g;
        CK(cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_GLOBAL));
        CK(cuLaunchKernel(fn, blocks, 1, 1, 128, 1, 1, 0, stream, NULL, NULL));
        CK(cuStreamEndCapture(stream, &g));
        CK(cuGraphInstantiate(&exec, g, 0));
        CK(cuGraphDestroy(g));
    }

    int sm = 1;
    CK(cuDeviceGetAttribute(&sm, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    const char *npb = getenv("FAKE_CUDA_NS_PER_BLOCK");
    double ns_per_block = npb ? atof(npb) : 10000.0;

    uint64_t busy0 = 0, busy1 = 0;
    bool have_busy = fake_busy(dev, &busy0, NULL, NULL);
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(seconds * 1e9), call_ns = 0;
    long long n = 0, n_warm = 0;
    uint64_t t_warm = warmup > 0 ? t0 + (uint64_t)(warmup * 1e9) : 0, busy_warm = 0;
    uint64_t iv_ns = interval > 0 ? (uint64_t)(interval * 1e9) : 0, iv_t = 0, iv_busy = 0;
    double samples[4096];
    int ns = 0;
    bool warm = false;
    while (now_ns() < end && (max_launches < 0 || n < max_launches)) {
        if (t_warm && have_busy) {
            uint64_t t = now_ns(), b = 0;
            if (!warm && t >= t_warm) {
                warm = true;
                fake_busy(dev, &busy_warm, NULL, NULL);
                t_warm = t;
                n_warm = n;
                iv_t = t;
                iv_busy = busy_warm;
            } else if (warm && iv_ns && t >= iv_t + iv_ns && ns < 4096) {
                fake_busy(dev, &b, NULL, NULL);
                samples[ns++] = (double)(b - iv_busy) / (double)(t - iv_t);
                iv_t = t;
                iv_busy = b;
            }
        }
        uint64_t c0 = now_ns();
        CUresult r;
        if (strcmp(path, "ex") == 0) {
            CUlaunchConfig cfg = {0};
            cfg.gridDimX = blocks;
            cfg.gridDimY = cfg.gridDimZ = 1;
            cfg.blockDimX = 128;
            cfg.blockDimY = cfg.blockDimZ = 1;
            cfg.hStream = stream;
            r = cuLaunchKernelEx(&cfg, fn, NULL, NULL);
        } else if (strcmp(path, "coop") == 0) {
            r = cuLaunchCooperativeKernel(fn, blocks, 1, 1, 128, 1, 1, 0, stream, NULL);
        } else if (strcmp(path, "graph") == 0) {
            r = cuGraphLaunch(exec, stream);
        } else {
            r = lk(fn, blocks, 1, 1, 128, 1, 1, 0, stream, NULL, NULL);
        }
        call_ns += now_ns() - c0;
        if (r != CUDA_SUCCESS)
            die("launch %lld: %s", n, err_name(r));
        n++;
        if (sync_every > 0 && n % sync_every == 0) {
            CK(stream ? cuStreamSynchronize(stream) : cuCtxSynchronize());
            if (sleep_us > 0) {
                struct timespec ts = {(time_t)(sleep_us / 1000000), (long)(sleep_us % 1000000) * 1000};
                nanosleep(&ts, NULL);
            }
        }
    }
    CK(stream ? cuStreamSynchronize(stream) : cuCtxSynchronize());
    uint64_t t1 = now_ns();
    if (have_busy)
        fake_busy(dev, &busy1, NULL, NULL);
    double wall = (double)(t1 - t0) / 1e9;
    double work = (double)n * blocks * ns_per_block / sm / 1e9;
    kv("launches", "%lld", n);
    kv("wall_s", "%.6f", wall);
    kv("launch_ns_avg", "%.1f", n ? (double)call_ns / (double)n : 0.0);
    kv("work_s", "%.6f", work);
    kv("work_util", "%.4f", wall > 0 ? work / wall : 0.0);
    if (have_busy) {
        kv("busy_s", "%.6f", (double)(busy1 - busy0) / 1e9);
        kv("util", "%.4f", wall > 0 ? (double)(busy1 - busy0) / 1e9 / wall : 0.0);
    }
    if (warm) {
        double pw = (double)(t1 - t_warm) / 1e9;
        double pwork = (double)(n - n_warm) * blocks * ns_per_block / sm / 1e9;
        kv("post_wall_s", "%.6f", pw);
        kv("post_util", "%.4f", pw > 0 ? (double)(busy1 - busy_warm) / 1e9 / pw : 0.0);
        kv("post_work_util", "%.4f", pw > 0 ? pwork / pw : 0.0);
        if (ns > 0) {
            double sum = 0, sq = 0;
            char buf[1000];
            size_t off = 0;
            for (int i = 0; i < ns; i++) {
                sum += samples[i];
                if (off < sizeof buf - 16)
                    off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%.4f", i ? "," : "", samples[i]);
            }
            double mean = sum / ns;
            for (int i = 0; i < ns; i++)
                sq += (samples[i] - mean) * (samples[i] - mean);
            kv("post_samples", "%s", buf);
            kv("post_mean", "%.4f", mean);
            kv("post_sd", "%.4f", ns > 1 ? __builtin_sqrt(sq / (ns - 1)) : 0.0);
        }
    }
    if (exec)
        cuGraphExecDestroy(exec);
    return 0;
}
