# The single image of every dra-hami component: kubelet plugin, exporter, controller and webhook
# (`dra-hami <command>`), plus libvgpu.so for the DaemonSet's install-libvgpu init container.
#
# Build (from the repository root):
#   docker build -t <registry>/dra-hami:0.1.0 .        (or: podman build / buildah bud, same arguments)
#   docker push <registry>/dra-hami:0.1.0
# then install the chart with --set image.repository=<registry>/dra-hami.
# Without Docker Hub, tests/e2e/build_image.sh makes a Debian bookworm base itself and builds this same file.
#
# Build arguments:
#   PYTHON_IMAGE          base of every stage: any Debian-based image with python3 (>= 3.11) and its venv module,
#                         e.g. the default, or a plain Debian bookworm with python3, python3-venv and python3-pip.
#   CUDA_HEADERS_VERSION  wheel version of cuda.h/nvml.h.
# Only `python3` is called, and everything is installed into a virtual environment: Debian's own python3 refuses
# a system-wide `pip install` (PEP 668), and the official python images accept both.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- libvgpu.so: built against the real cuda.h and nvml.h, fetched from the PyPI wheels by the Makefile ------
FROM ${PYTHON_IMAGE} AS libvgpu
ARG CUDA_HEADERS_VERSION=12.9.79
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev make \
 && rm -rf /var/lib/apt/lists/*
# pip for fetch-headers.sh (`pip download`), in a venv so that the Debian base accepts it.
RUN python3 -m venv /opt/build-venv
WORKDIR /src
COPY libvgpu/ libvgpu/
ENV DRA_HAMI_CACHE=/cache CUDA_HEADERS_VERSION=${CUDA_HEADERS_VERSION} PIP="/opt/build-venv/bin/python -m pip"
RUN make -C libvgpu -j"$(nproc)" \
 && install -D -m 0755 libvgpu/build/libvgpu.so /out/libvgpu.so

# --- the Python package as a wheel (the build compiles the kubelet gRPC protos with grpcio-tools) ----------
FROM ${PYTHON_IMAGE} AS wheel
RUN python3 -m venv /opt/build-venv
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY dra_hami/ dra_hami/
COPY cdi/ cdi/
# The wheel carries libvgpu.so too (`dra-hami install-libvgpu --dest DIR` copies it out).
COPY --from=libvgpu /out/libvgpu.so /out/libvgpu.so
RUN DRA_HAMI_LIBVGPU=/out/libvgpu.so /opt/build-venv/bin/python -m pip wheel --no-cache-dir --no-deps \
    --wheel-dir /wheels .

# --- runtime ------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/dra-hami/venv/bin:$PATH
COPY --from=wheel /wheels/ /tmp/wheels/
RUN python3 -m venv /opt/dra-hami/venv \
 && /opt/dra-hami/venv/bin/python -m pip install --no-cache-dir /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels
# The chart's init container copies it to <hostPaths.vgpuDir>/libvgpu.so when its sha256 differs.
COPY --from=libvgpu /out/libvgpu.so /opt/dra-hami/lib/libvgpu.so
# The default user stays root: the kubelet plugin and the init container write host sockets, the CDI directory
# and the libvgpu directory. The chart runs the controller and webhook as 65532 with a read-only root
# filesystem; everything above is world-readable and nothing is written at run time, so they need nothing else.
ENTRYPOINT ["dra-hami"]
CMD ["--help"]
