/* The claim's variables for processes that did not inherit the container's environment.
 *
 * HAMi#1090: a session started by su -, ssh, sudo or env -i has LD_PRELOAD's effect (the library is
 * in /etc/ld.so.preload) but none of the variables the container runtime set, so it ran without
 * limits and saw the whole GPU.  The kubelet plugin also writes each claim's variables, one
 * NAME=VALUE per line, to <claims dir>/<claim uid>/vgpu.env inside the claim's mounted directory;
 * when the environment holds none of the claim variables, those files stand in for it. */
#ifndef VGPU_CLAIM_ENV_H
#define VGPU_CLAIM_ENV_H

#include <stdbool.h>
#include <stddef.h>

#define VGPU_CLAIMS_DIR_DEFAULT "/usr/local/vgpu/claims" /* where the CDI spec mounts claim dirs */
#define VGPU_CLAIMS_DIR_ENV "VGPU_CLAIMS_DIR"            /* overrides it (tests, other layouts) */
#define VGPU_CLAIM_ENV_FILE "vgpu.env"
#define VGPU_CLAIM_ENV_MAX (64 * 1024) /* a claim's file is a few hundred bytes */

/* Splits buf (NUL-terminated, modified in place) into its NAME=VALUE lines, stored in out[0..max):
 * blank lines and '#' comments are skipped, a trailing CR is dropped, and a line without '=' or
 * with an empty name is logged (with SOURCE) and skipped.  Returns the number stored. */
size_t vgpu_claim_env_lines(char *buf, const char *source, char **out, size_t max);

/* For an envp without claim variables (config.c decides, vgpu_env_has_claim_vars): envp itself
 * when there are no claim files; otherwise a new NULL-terminated array (kept for the life of the
 * process): envp's entries, then those of every claim file under claims_dir in name order.
 * *failed is set when a claim file exists but cannot be read whole: the caller then fails closed. */
char *const *vgpu_claim_env(char *const *envp, const char *claims_dir, bool *failed);

#endif
