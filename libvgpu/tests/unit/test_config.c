#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"
#include "claim_env.h"
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GI (1024ULL * 1024 * 1024)
#define MI (1024ULL * 1024)

static struct vgpu_config cfg;

static void parse(char **env)
{
    vgpu_config_parse(&cfg, env);
}

int main(void)
{
    unsigned cores;
    struct vgpu_mem_limit l;

    /* nothing set: unlimited, no cap, defaults */
    {
        char *env[] = {NULL};
        parse(env);
        l = vgpu_config_device_limit(&cfg, 0, "GPU-x", &cores);
        CHECK(!l.set && cores == 0);
        CHECK(cfg.priority == 1 && cfg.policy == VGPU_POLICY_DEFAULT && !cfg.disabled);
        CHECK(cfg.oom_policy == VGPU_OOM_ERROR && cfg.shared_cache == NULL);
    }
    /* indexed variables: per-index overrides global */
    {
        char *env[] = {"CUDA_DEVICE_MEMORY_LIMIT=2g", "CUDA_DEVICE_MEMORY_LIMIT_1=4096m",
                       "CUDA_DEVICE_SM_LIMIT=30", "CUDA_DEVICE_SM_LIMIT_1=60",
                       "GPU_CORE_UTILIZATION_POLICY=FoRcE", "CUDA_TASK_PRIORITY=0",
                       "VGPU_OOM_POLICY=KILL", "CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/x.cache",
                       NULL};
        parse(env);
        l = vgpu_config_device_limit(&cfg, 0, "GPU-a", &cores);
        CHECK(l.set && l.bytes == 2 * GI && cores == 30);
        l = vgpu_config_device_limit(&cfg, 1, "GPU-b", &cores);
        CHECK(l.set && l.bytes == 4096 * MI && cores == 60);
        CHECK(cfg.policy == VGPU_POLICY_FORCE && cfg.priority == 0 && cfg.oom_policy == VGPU_OOM_KILL);
        CHECK(strcmp(cfg.shared_cache, "/tmp/x.cache") == 0);
    }
    /* bad sizes fail closed (limit 0 = refuse everything), 0 means unlimited (HAMi meaning) */
    {
        char *env[] = {"CUDA_DEVICE_MEMORY_LIMIT=4gb?", "CUDA_DEVICE_MEMORY_LIMIT_1=0",
                       "CUDA_DEVICE_MEMORY_LIMIT_2=-1", "CUDA_DEVICE_MEMORY_LIMIT_3=",
                       "CUDA_DEVICE_MEMORY_LIMIT_4=99999999999999999999999", NULL};
        parse(env);
        l = vgpu_config_device_limit(&cfg, 0, NULL, NULL);
        CHECK(l.set && l.bytes == 0);
        l = vgpu_config_device_limit(&cfg, 1, NULL, NULL);
        CHECK(!l.set);
        for (int i = 2; i <= 4; i++) {
            l = vgpu_config_device_limit(&cfg, i, NULL, NULL);
            CHECK(l.set && l.bytes == 0);
        }
        l = vgpu_config_device_limit(&cfg, 5, NULL, NULL); /* falls back to the bad global */
        CHECK(l.set && l.bytes == 0);
    }
    /* UUID list wins over indexed variables; several entries of one UUID give the lowest (never a
     * sum: an added entry cannot raise the limit or lift the compute cap) */
    {
        char *env[] = {"CUDA_DEVICE_MEMORY_LIMIT_0=1g",
                       "CUDA_DEVICE_SM_LIMIT_0=10",
                       "VGPU_DEVICE_LIMIT_aaaa_0=GPU-1111-2222,1073741824,30",
                       "VGPU_DEVICE_LIMIT_bbbb_0=gpu-1111-2222,2147483648,80",
                       "VGPU_DEVICE_LIMIT_cccc_0=GPU-3333, 4g ,20",
                       "VGPU_DEVICE_LIMIT_dddd_0=GPU-4444,4gb?,20",
                       NULL};
        parse(env);
        CHECK(cfg.uuid_mode && cfg.n_uuid == 4);
        l = vgpu_config_device_limit(&cfg, 0, "GPU-1111-2222", &cores);
        CHECK(l.set && l.bytes == 1 * GI && cores == 30);
        l = vgpu_config_device_limit(&cfg, 1, "1111-2222", &cores); /* prefix-less match */
        CHECK(l.set && l.bytes == 1 * GI);
        l = vgpu_config_device_limit(&cfg, 0, "GPU-3333", &cores);
        CHECK(l.set && l.bytes == 4 * GI && cores == 20);
        l = vgpu_config_device_limit(&cfg, 0, "GPU-4444", &cores); /* bad memory: fail closed */
        CHECK(l.set && l.bytes == 0);
        l = vgpu_config_device_limit(&cfg, 0, "GPU-9999", &cores); /* not in the claim */
        CHECK(l.set && l.bytes == 0 && cores == 0);
        l = vgpu_config_device_limit(&cfg, 0, NULL, &cores); /* UUID unknown */
        CHECK(l.set && l.bytes == 0);
    }
    /* SM parsing */
    {
        char *env[] = {"CUDA_DEVICE_SM_LIMIT=50%", "CUDA_DEVICE_SM_LIMIT_1=150",
                       "CUDA_DEVICE_SM_LIMIT_2=100", "CUDA_DEVICE_SM_LIMIT_3=0",
                       "GPU_CORE_UTILIZATION_POLICY=Disable", "CUDA_DISABLE_CONTROL=TRUE",
                       "LIBCUDA_LOG_LEVEL=0", NULL};
        parse(env);
        CHECK(vgpu_config_device_limit(&cfg, 0, NULL, &cores).set == false && cores == 50);
        vgpu_config_device_limit(&cfg, 1, NULL, &cores);
        CHECK(cores == 0);
        vgpu_config_device_limit(&cfg, 2, NULL, &cores);
        CHECK(cores == 0);
        vgpu_config_device_limit(&cfg, 3, NULL, &cores);
        CHECK(cores == 0);
        /* the kill switch exists only in a test build (VGPU_TEST_HOOKS): this one is production */
        CHECK(cfg.policy == VGPU_POLICY_DISABLE && !cfg.disabled && cfg.log_level == 0);
    }
    CHECK(vgpu_uuid_equal("GPU-ABCD", "abcd") && !vgpu_uuid_equal("GPU-ab", "GPU-abc"));

    /* issue 18, seen: an entry the tenant adds for its own GPU was summed (+<bytes>), and one of
     * UINT64_MAX bytes removed the cap and the compute limit.  Now the lowest entry holds. */
    {
        char *env[] = {"VGPU_DEVICE_LIMIT_0f1e2d3c_0=GPU-aaaa,4294967296,30",
                       "VGPU_DEVICE_LIMIT_zz=GPU-aaaa,8589934592,0",
                       "VGPU_DEVICE_LIMIT_zy=GPU-aaaa,18446744073709551615,100",
                       "VGPU_DEVICE_LIMIT_zx=GPU-aaaa,0,0", NULL};
        parse(env);
        l = vgpu_config_device_limit(&cfg, 0, "GPU-aaaa", &cores);
        CHECK(l.set && l.bytes == 4 * GI && cores == 30);
        /* an entry may lower it */
        char *lower[] = {"VGPU_DEVICE_LIMIT_0f1e2d3c_0=GPU-aaaa,4294967296,30",
                         "VGPU_DEVICE_LIMIT_zz=GPU-aaaa,1g,10", NULL};
        parse(lower);
        l = vgpu_config_device_limit(&cfg, 0, "GPU-aaaa", &cores);
        CHECK(l.set && l.bytes == GI && cores == 10);
    }

    /* The limits file is a ceiling: the environment may lower every limit, raise none, and never
     * chooses the region path; policy only stricter, priority only lower. */
    {
        static struct vgpu_config ceil;
        char *file[] = {"VGPU_DEVICE_LIMIT_0f1e2d3c_0=GPU-aaaa,4294967296,30",
                        "CUDA_DEVICE_MEMORY_LIMIT_0=4096m", "CUDA_DEVICE_SM_LIMIT_0=30",
                        "CUDA_DEVICE_MEMORY_SHARED_CACHE=/usr/local/vgpu/claims/u/vgpu.cache",
                        "GPU_CORE_UTILIZATION_POLICY=default", "VGPU_OOM_POLICY=error", NULL};
        vgpu_config_parse(&ceil, file);

        char *raise[] = {"VGPU_DEVICE_LIMIT_0f1e2d3c_0=GPU-aaaa,68719476736,100",
                         "CUDA_DEVICE_MEMORY_LIMIT=0", "CUDA_DEVICE_SM_LIMIT=0",
                         "CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/mine.cache",
                         "GPU_CORE_UTILIZATION_POLICY=disable", "CUDA_TASK_PRIORITY=0",
                         "VGPU_OOM_POLICY=kill", NULL};
        parse(raise);
        vgpu_config_apply_ceiling(&cfg, &ceil);
        l = vgpu_config_device_limit(&cfg, 0, "GPU-aaaa", &cores);
        CHECK(l.set && l.bytes == 4 * GI && cores == 30);
        l = vgpu_config_device_limit(&cfg, 1, "GPU-bbbb", &cores); /* not the claim's */
        CHECK(l.set && l.bytes == 0);
        CHECK(strcmp(cfg.shared_cache, "/usr/local/vgpu/claims/u/vgpu.cache") == 0);
        CHECK(cfg.policy == VGPU_POLICY_DEFAULT && cfg.priority == 1);
        CHECK(cfg.oom_policy == VGPU_OOM_KILL); /* only concerns the process itself */
        CHECK(vgpu_config_uuid_mode(&cfg) && vgpu_config_any_cap(&cfg));

        char *lower[] = {"CUDA_DEVICE_MEMORY_LIMIT=1g", "CUDA_DEVICE_SM_LIMIT=10",
                         "GPU_CORE_UTILIZATION_POLICY=force", NULL};
        parse(lower);
        vgpu_config_apply_ceiling(&cfg, &ceil);
        l = vgpu_config_device_limit(&cfg, 0, "GPU-aaaa", &cores);
        CHECK(l.set && l.bytes == GI && cores == 10);
        CHECK(cfg.policy == VGPU_POLICY_FORCE && cfg.oom_policy == VGPU_OOM_ERROR);

        char *none[] = {NULL}; /* env -i: the file alone */
        parse(none);
        vgpu_config_apply_ceiling(&cfg, &ceil);
        l = vgpu_config_device_limit(&cfg, 0, "GPU-aaaa", &cores);
        CHECK(l.set && l.bytes == 4 * GI && cores == 30);

        /* a ceiling without limits (an admin-access claim): unlimited unless the process lowers it */
        char *admin[] = {"CUDA_DEVICE_MEMORY_SHARED_CACHE=/x", NULL};
        vgpu_config_parse(&ceil, admin);
        parse(lower);
        vgpu_config_apply_ceiling(&cfg, &ceil);
        l = vgpu_config_device_limit(&cfg, 0, "GPU-aaaa", &cores);
        CHECK(l.set && l.bytes == GI && cores == 10);
        parse(none);
        vgpu_config_apply_ceiling(&cfg, &ceil);
        l = vgpu_config_device_limit(&cfg, 0, "GPU-aaaa", &cores);
        CHECK(!l.set && cores == 0 && !vgpu_config_any_cap(&cfg));
    }

    /* claim files (claim_env.c): which variables make the environment a claim's, and the lines */
    {
        char *plain[] = {"PATH=/bin", "CUDA_VISIBLE_DEVICES=0", "LIBCUDA_LOG_LEVEL=4", NULL};
        char *indexed[] = {"PATH=/bin", "CUDA_DEVICE_SM_LIMIT_3=20", NULL};
        char *listed[] = {"VGPU_DEVICE_LIMIT_ab_0=GPU-1,1,0", NULL};
        char *cache[] = {"CUDA_DEVICE_MEMORY_SHARED_CACHE=/x", NULL};
        CHECK(!vgpu_env_has_claim_vars(plain) && !vgpu_env_has_claim_vars(NULL));
        CHECK(vgpu_env_has_claim_vars(indexed) && vgpu_env_has_claim_vars(listed) &&
              vgpu_env_has_claim_vars(cache));
        char text[] = "# comment\n\nA=1\r\n=nameless\nno equals\nB=x=y\nC=";
        char *out[8];
        size_t n = vgpu_claim_env_lines(text, "test", out, 8);
        CHECK(n == 3 && strcmp(out[0], "A=1") == 0 && strcmp(out[1], "B=x=y") == 0 && strcmp(out[2], "C=") == 0);
        char two[] = "A=1\nB=2\nC=3\n";
        CHECK(vgpu_claim_env_lines(two, "test", out, 2) == 2); /* at most max, the rest logged */
        char empty[] = "";
        CHECK(vgpu_claim_env_lines(empty, "test", out, 8) == 0);
    }

    /* issue 18, seen: a setuid process opened, truncated and chmodded paths its (tenant-chosen)
     * environment named.  Under AT_SECURE no path from the environment is used. */
    {
        char dir[] = "/tmp/vgpu-secure-test-XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        char sub[128], file[160], claims_var[160];
        snprintf(sub, sizeof sub, "%s/c1", dir);
        snprintf(file, sizeof file, "%s/vgpu.env", sub);
        snprintf(claims_var, sizeof claims_var, "VGPU_CLAIMS_DIR=%s", dir);
        CHECK(mkdir(sub, 0700) == 0);
        FILE *f = fopen(file, "w");
        CHECK(f != NULL);
        if (f != NULL) {
            fputs("CUDA_DEVICE_MEMORY_LIMIT=1g\nCUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/tenant.cache\n", f);
            fclose(f);
        }
        static struct vgpu_config ceil;
        char *env[] = {claims_var, "PATH=/bin", NULL};
        vgpu_config_load(&cfg, &ceil, env, false, "/nonexistent-limits-dir");
        l = vgpu_config_device_limit(&cfg, 0, NULL, NULL);
        CHECK(l.set && l.bytes == GI && strcmp(cfg.shared_cache, "/tmp/tenant.cache") == 0 && !cfg.secure);
        vgpu_config_load(&cfg, &ceil, env, true, "/nonexistent-limits-dir");
        CHECK(cfg.secure && cfg.shared_cache == NULL && cfg.ceiling == NULL);
        l = vgpu_config_device_limit(&cfg, 0, NULL, NULL);
        CHECK(!l.set); /* the tenant's directory was not read (the default one does not exist here) */
        char *own[] = {"CUDA_DEVICE_MEMORY_LIMIT=2g", "CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/tenant.cache", NULL};
        vgpu_config_load(&cfg, &ceil, own, true, "/nonexistent-limits-dir");
        l = vgpu_config_device_limit(&cfg, 0, NULL, NULL);
        CHECK(l.set && l.bytes == 2 * GI && cfg.shared_cache == NULL);
        unlink(file);
        rmdir(sub);
        rmdir(dir);
    }

    /* Regression table (found by tests/fuzz/fuzz_env.c): fields of VGPU_DEVICE_LIMIT_* were cut to
     * fixed buffers, so a valid memory field longer than 63 characters ("000...01g") was read as
     * 0 = unlimited (fail open) and an over-long UUID was cut (could name another GPU). */
    {
        static char zeros_1g[] = "VGPU_DEVICE_LIMIT_a=GPU-5555,"
                                 "0000000000000000000000000000000000000000000000000000000000000000000001g,"
                                 "0000000000000000000000000000000000000000000000000000000000000000025";
        static char long_uuid[] = "VGPU_DEVICE_LIMIT_b=GPU-6666666666666666666666666666666666666666666666666666666"
                                  "6666666666666666666666666666666666666666666666666666,1g,10";
        static char long_bad[] = "VGPU_DEVICE_LIMIT_c=GPU-7777,"
                                 "0000000000000000000000000000000000000000000000000000000000000000000001x,5";
        char *env[] = {zeros_1g, long_uuid, long_bad, NULL};
        parse(env);
        CHECK(cfg.uuid_mode && cfg.n_uuid == 2); /* the over-long UUID is refused */
        l = vgpu_config_device_limit(&cfg, 0, "GPU-5555", &cores);
        CHECK(l.set && l.bytes == GI && cores == 25);
        l = vgpu_config_device_limit(&cfg, 0, "GPU-7777", &cores);
        CHECK(l.set && l.bytes == 0 && cores == 0);
        l = vgpu_config_device_limit(&cfg, 0, "GPU-666666666666666666666666666666666666666666666666666666666666666666666666666666666666666666", &cores);
        CHECK(l.set && l.bytes == 0 && cores == 0);
    }
    CHECK_DONE();
}
