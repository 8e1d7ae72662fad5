/* Per-process allocation table: key (device pointer, VMM handle or array handle) -> charge.
 * Sharded open-addressing hash map (linear probing, backward-shift deletion, 16-byte entries,
 * tables of 2 MiB and more on transparent huge pages), one lock per shard: O(1) expected
 * insert/lookup/remove, low contention between threads. */
#ifndef VGPU_ALLOC_H
#define VGPU_ALLOC_H

#include <stdbool.h>
#include <stdint.h>

enum vgpu_alloc_kind {
    VGPU_KIND_MEM = 1,     /* cuMemAlloc / pitch / managed / async / pool: key = CUdeviceptr */
    VGPU_KIND_VMM = 2,     /* cuMemCreate: key = CUmemGenericAllocationHandle */
    VGPU_KIND_ARRAY = 3,   /* cuArrayCreate / cuArray3DCreate: key = CUarray */
    VGPU_KIND_MIPMAP = 4,  /* cuMipmappedArrayCreate: key = CUmipmappedArray */
};

struct vgpu_alloc_rec {
    uint64_t size;
    int16_t didx; /* region device record */
    uint8_t kind;
};

/* Inserts key; if key was present its old record is returned in *old and true is returned via
 * *replaced.  Returns false on out-of-memory or a record it cannot hold (size >= 2^56, didx
 * outside 0..31). */
bool vgpu_alloc_insert(uint64_t key, struct vgpu_alloc_rec rec, bool *replaced,
                       struct vgpu_alloc_rec *old);
/* Removes key and returns its record. */
bool vgpu_alloc_remove(uint64_t key, uint8_t kind, struct vgpu_alloc_rec *out);
/* Number of live records (all kinds; for tests). */
uint64_t vgpu_alloc_count(void);
/* Drops every record (fork child, tests). */
void vgpu_alloc_reset(void);
void vgpu_alloc_atfork_prepare(void);
void vgpu_alloc_atfork_parent(void);
void vgpu_alloc_atfork_child(void);

#endif
