"""Node metrics exporter: per-claim usage from libvgpu's shared regions and per-GPU usage from NVML."""
