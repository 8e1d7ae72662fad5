/* Process-wide lifecycle: fork handlers (installed on first use of the region). */
#include "alloc.h"
#include "device.h"
#include "limiter.h"
#include "region.h"

#include <pthread.h>

void vgpu_atfork_install(void);

static void prepare(void)
{
    vgpu_alloc_atfork_prepare();
}

static void parent(void)
{
    vgpu_alloc_atfork_parent();
}

static void child(void)
{
    vgpu_alloc_atfork_child();
    vgpu_device_atfork_child();
    vgpu_limiter_atfork_child();
    vgpu_region_atfork_child();
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void install(void)
{
    pthread_atfork(prepare, parent, child);
}

void vgpu_atfork_install(void)
{
    pthread_once(&g_once, install);
}
