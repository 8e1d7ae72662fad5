"""The Python reader's layout constants equal what gcc makes of libvgpu/src/region.h."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dra_hami.exporter import region

SRC = Path(__file__).resolve().parents[3] / "libvgpu" / "src"

# name in the Python module -> C expression
FIELDS = {
    "MAGIC": "VGPU_REGION_MAGIC",
    "VERSION": "VGPU_REGION_VERSION",
    "MAX_DEVICES": "VGPU_MAX_DEVICES",
    "MAX_PROCS": "VGPU_REGION_MAX_PROCS",
    "UUID_LEN": "sizeof(((struct vgpu_region_device *)0)->uuid)",
    "HEADER_SIZE": "VGPU_REGION_HEADER_SIZE",
    "DEVICE_SIZE": "sizeof(struct vgpu_region_device)",
    "PROC_SIZE": "sizeof(struct vgpu_region_proc)",
    "DEVICES_OFFSET": "offsetof(struct vgpu_region, dev)",
    "PROCS_OFFSET": "offsetof(struct vgpu_region, proc)",
    "TOTAL_SIZE": "sizeof(struct vgpu_region)",
    "HDR_MAGIC": "offsetof(struct vgpu_region_header, magic)",
    "HDR_VERSION": "offsetof(struct vgpu_region_header, version)",
    "HDR_HEADER_SIZE": "offsetof(struct vgpu_region_header, header_size)",
    "HDR_DEVICE_SIZE": "offsetof(struct vgpu_region_header, device_size)",
    "HDR_PROC_SIZE": "offsetof(struct vgpu_region_header, proc_size)",
    "HDR_MAX_DEVICES": "offsetof(struct vgpu_region_header, max_devices)",
    "HDR_MAX_PROCS": "offsetof(struct vgpu_region_header, max_procs)",
    "HDR_TOTAL_SIZE": "offsetof(struct vgpu_region_header, total_size)",
    "HDR_PROC_HIGH": "offsetof(struct vgpu_region_header, proc_high)",
    "HDR_DEVICE_COUNT": "offsetof(struct vgpu_region_header, device_count)",
    "HDR_LIM": "offsetof(struct vgpu_region_header, lim)",
    "LIMITER_SIZE": "sizeof(struct vgpu_region_limiter)",
    "LIM_UTIL": "offsetof(struct vgpu_region_limiter, util)",
    "DEV_UUID": "offsetof(struct vgpu_region_device, uuid)",
    "DEV_USED": "offsetof(struct vgpu_region_device, used)",
    "DEV_LIMIT": "offsetof(struct vgpu_region_device, limit)",
    "DEV_HAS_LIMIT": "offsetof(struct vgpu_region_device, has_limit)",
    "DEV_SM_LIMIT": "offsetof(struct vgpu_region_device, sm_limit)",
    "DEV_PEAK": "offsetof(struct vgpu_region_device, peak)",
    "DEV_UTIL": "offsetof(struct vgpu_region_device, util)",
    "DEV_ACTIVE_PROCS": "offsetof(struct vgpu_region_device, active_procs)",
    "PROC_STATE": "offsetof(struct vgpu_region_proc, state)",
    "PROC_PID": "offsetof(struct vgpu_region_proc, pid)",
    "PROC_USED": "offsetof(struct vgpu_region_proc, used)",
    "SLOT_ACTIVE": "VGPU_SLOT_ACTIVE",
}


def c_values(tmp_path: Path) -> dict[str, int]:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.fail("no C compiler (gcc/cc) on PATH: the layout check needs one to read region.h")
    lines = "\n".join(f'    printf("{name}=%llu\\n", (unsigned long long)({expr}));' for name, expr in FIELDS.items())
    source = tmp_path / "layout.c"
    head = '#include <stddef.h>\n#include <stdio.h>\n#include "region.h"\n'
    source.write_text(f"{head}int main(void)\n{{\n{lines}\n    return 0;\n}}\n")
    binary = tmp_path / "layout"
    subprocess.run([compiler, "-std=gnu11", f"-I{SRC}", "-o", str(binary), str(source)], check=True)
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    return {key: int(value) for key, value in (line.split("=") for line in out.splitlines())}


def test_python_layout_matches_region_h(tmp_path: Path) -> None:
    measured = c_values(tmp_path)
    ours = {name: getattr(region, name) for name in FIELDS}
    assert ours == measured


def test_derived_struct_formats_cover_the_fields() -> None:
    # the packed struct formats read consecutive fields: their sizes must match the gaps in the layout
    assert region._HEADER.size == region.HDR_DEVICE_COUNT + 4
    assert region._DEVICE_NUMBERS.size == region.DEV_ACTIVE_PROCS + 4 - region.DEV_USED
