/* The claims' limits files: the only source of a claim's limits a process cannot rewrite.
 *
 * The kubelet plugin writes one file per claim on the node (root-owned, outside the claim's
 * tenant-writable directory) and its CDI spec bind-mounts it read-only at
 * VGPU_LIMITS_DIR/<claim uid>.  The directory is fixed at compile time: no variable can point
 * libvgpu elsewhere.  A file counts only when it is a regular file that is itself the root of a
 * read-only mount (what the runtime's bind mount makes, and what a process without
 * CAP_SYS_ADMIN cannot make): a file a tenant writes into the directory of a writable root
 * filesystem, or ships in its image, is ignored with a warning.  The format is vgpu.env's:
 * NAME=VALUE lines (claim_env.h). */
#ifndef VGPU_LIMITS_FILE_H
#define VGPU_LIMITS_FILE_H

#include <stdbool.h>

#ifndef VGPU_LIMITS_DIR
#define VGPU_LIMITS_DIR "/usr/local/vgpu/limits"
#endif

/* The lines of every accepted file under DIR, in file name order, as a NULL-terminated array
 * kept for the life of the process; NULL when there is none.  *failed is set when an accepted
 * file cannot be read whole (the caller then fails closed). */
char *const *vgpu_limits_read(const char *dir, bool *failed);

#endif
