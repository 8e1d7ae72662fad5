/* The pause hint of spin-wait loops (the futex locks of alloc.c and region.c). */
#ifndef VGPU_CPU_H
#define VGPU_CPU_H

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() ((void)0)
#endif

#endif
