# The single image of every dra-hami component: kubelet plugin, exporter, controller and webhook
# (`dra-hami <command>`), plus libvgpu.so for the DaemonSet's install-libvgpu init container.
#
# Build (from the repository root):
#   docker build -t <registry>/dra-hami:0.1.0 .
#   docker push <registry>/dra-hami:0.1.0
# then install the chart with --set image.repository=<registry>/dra-hami.
# Build arguments: PYTHON_IMAGE (base of every stage), CUDA_HEADERS_VERSION (wheel version of cuda.h/nvml.h).

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- libvgpu.so: built against the real cuda.h and nvml.h, fetched from the PyPI wheels by the Makefile ------
FROM ${PYTHON_IMAGE} AS libvgpu
ARG CUDA_HEADERS_VERSION=12.9.79
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY libvgpu/ libvgpu/
ENV DRA_HAMI_CACHE=/cache CUDA_HEADERS_VERSION=${CUDA_HEADERS_VERSION}
RUN make -C libvgpu -j"$(nproc)" \
 && install -D -m 0755 libvgpu/build/libvgpu.so /out/libvgpu.so

# --- the Python package as a wheel (the build compiles the kubelet gRPC protos with grpcio-tools) ----------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY dra_hami/ dra_hami/
COPY cdi/ cdi/
# The wheel carries libvgpu.so too (`dra-hami install-libvgpu --dest DIR` copies it out).
COPY --from=libvgpu /out/libvgpu.so /out/libvgpu.so
RUN DRA_HAMI_LIBVGPU=/out/libvgpu.so python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- runtime ------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=wheel /wheels/ /tmp/wheels/
RUN python -m pip install --no-cache-dir /tmp/wheels/*.whl && rm -rf /tmp/wheels
# The chart's init container copies it to <hostPaths.vgpuDir>/libvgpu.so when its sha256 differs.
COPY --from=libvgpu /out/libvgpu.so /opt/dra-hami/lib/libvgpu.so
# The plugin runs as root (host sockets and CDI dir); the chart runs the controller and webhook as 65532.
ENTRYPOINT ["dra-hami"]
CMD ["--help"]
