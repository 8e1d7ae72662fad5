"""tests/bench holds benchmark scripts run by hand (``python tests/bench/bench_libvgpu.py``), not
tests: keep pytest from collecting (and so running) them."""

collect_ignore_glob = ["*.py"]
