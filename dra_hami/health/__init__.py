"""Device health: NVML XID / lost-GPU monitoring (or injected fake events) -> ResourceSlice device taints and
the kubelet's DRAResourceHealth stream."""
