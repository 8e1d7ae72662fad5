/* meminfo: the CUDA view of every device's memory.
 *
 *   meminfo [--device=D] [--ctx=primary|create] [--legacy]
 *
 * Per device i prints dev<i>.name, .uuid, .pci_bus_id, .sm_count, .cc, .total_mem
 * (cuDeviceTotalMem_v2), .free/.total (cuMemGetInfo_v2 with a context current on it),
 * .info_result, and with --legacy also the 32-bit cuDeviceTotalMem/cuMemGetInfo (via dlsym).
 * Also prints device_count and driver_version. */
#include "common.h"

int main(int argc, char **argv)
{
    opts_init(argc, argv);
    CK(cuInit(0));
    int ver = 0, n = 0;
    CK(cuDriverGetVersion(&ver));
    CK(cuDeviceGetCount(&n));
    kv("driver_version", "%d", ver);
    kv("device_count", "%d", n);
    long long only = opt_int("device", -1);
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    for (int i = 0; i < n; i++) {
        if (only >= 0 && i != only)
            continue;
        char k[64], name[128], bus[32];
        CUdevice d;
        CK(cuDeviceGet(&d, i));
#define KEY(s) (snprintf(k, sizeof k, "dev%d.%s", i, s), k)
        CK(cuDeviceGetName(name, sizeof name, d));
        kv(KEY("name"), "%s", name);
        CUuuid u;
        CK(cuDeviceGetUuid(&u, d));
        unsigned char *b = (unsigned char *)u.bytes;
        kv(KEY("uuid"), "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
           b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
        CK(cuDeviceGetPCIBusId(bus, sizeof bus, d));
        kv(KEY("pci_bus_id"), "%s", bus);
        int sm = 0, ma = 0, mi = 0;
        CK(cuDeviceGetAttribute(&sm, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d));
        CK(cuDeviceGetAttribute(&ma, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d));
        CK(cuDeviceGetAttribute(&mi, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d));
        kv(KEY("sm_count"), "%d", sm);
        kv(KEY("cc"), "%d.%d", ma, mi);
        size_t total_mem = 0;
        CUresult r = cuDeviceTotalMem(&total_mem, d);
        kv(KEY("total_mem"), "%zu", r == CUDA_SUCCESS ? total_mem : 0);

        CUcontext ctx;
        bool created = strcmp(opt_str("ctx", "primary"), "create") == 0;
        if (created) {
            CK(cuCtxCreate(&ctx, 0, d));
        } else {
            CK(cuDevicePrimaryCtxRetain(&ctx, d));
            CK(cuCtxPushCurrent(ctx));
        }
        size_t f = 0, t = 0;
        r = cuMemGetInfo(&f, &t);
        kv(KEY("info_result"), "%s", err_name(r));
        kv(KEY("free"), "%zu", f);
        kv(KEY("total"), "%zu", t);
        if (opt_flag("legacy") && lib) {
            CUresult (*tm1)(unsigned *, CUdevice) = (CUresult (*)(unsigned *, CUdevice))dlsym(lib, "cuDeviceTotalMem");
            CUresult (*mi1)(unsigned *, unsigned *) = (CUresult (*)(unsigned *, unsigned *))dlsym(lib, "cuMemGetInfo");
            unsigned a = 0, fb = 0, tb = 0;
            if (tm1 && tm1(&a, d) == CUDA_SUCCESS)
                kv(KEY("total_mem_v1"), "%u", a);
            if (mi1 && mi1(&fb, &tb) == CUDA_SUCCESS) {
                kv(KEY("free_v1"), "%u", fb);
                kv(KEY("total_v1"), "%u", tb);
            }
        }
        uint64_t used, total;
        if (fake_memory(i, &used, &total))
            kv(KEY("fake_used"), "%" PRIu64, used);
        if (created) {
            CK(cuCtxDestroy(ctx));
        } else {
            CK(cuCtxPopCurrent(NULL));
            CK(cuDevicePrimaryCtxRelease(d));
        }
#undef KEY
    }
    return 0;
}
