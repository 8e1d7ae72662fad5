"""Label, annotation and resource names the webhook reads and writes (see notes in docs/migrating-from-hami.md)."""

from __future__ import annotations

PREFIX = "dra-hami.project-hami.io"

# Opt-out of policy mode (the scheduling gate), on a namespace or a pod.
POLICY_MODE_LABEL = f"{PREFIX}/policy-mode"
POLICY_MODE_DISABLED = "disabled"
# Opt-in to HAMi legacy translation, on a namespace (or --legacy-translation for the whole cluster).
LEGACY_LABEL = f"{PREFIX}/legacy-translation"
LEGACY_ENABLED = "enabled"

# Written by the translation.
TRANSLATED_LABEL = f"{PREFIX}/legacy-translated"  # on pods and on the claims their templates create: "true"
TEMPLATE_LABEL = f"{PREFIX}/legacy-template"  # on the ResourceClaimTemplates the webhook creates: "true"
LAST_USED_ANNOTATION = f"{PREFIX}/last-used"  # RFC 3339; the collector keeps templates used recently
SOURCE_ANNOTATION = f"{PREFIX}/legacy-source"  # on pods: "<container>=<template>,..." for people

# HAMi's resources (per container) and annotations (per pod).
RESOURCE_GPU = "nvidia.com/gpu"
RESOURCE_MEM = "nvidia.com/gpumem"  # MiB
RESOURCE_MEM_PERCENT = "nvidia.com/gpumem-percentage"
RESOURCE_CORES = "nvidia.com/gpucores"
LEGACY_RESOURCES = (RESOURCE_GPU, RESOURCE_MEM, RESOURCE_MEM_PERCENT, RESOURCE_CORES)
LEGACY_PREFIX = "nvidia.com/"

USE_TYPE = "nvidia.com/use-gputype"
NOUSE_TYPE = "nvidia.com/nouse-gputype"
USE_UUID = "nvidia.com/use-gpuuuid"
NOUSE_UUID = "nvidia.com/nouse-gpuuuid"
VGPU_MODE = "nvidia.com/vgpu-mode"  # HAMi: hami-core (what we do) or mig (what we cannot do)
KNOWN_ANNOTATIONS = (USE_TYPE, NOUSE_TYPE, USE_UUID, NOUSE_UUID, VGPU_MODE)
