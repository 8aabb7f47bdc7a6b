# syntax=docker/dockerfile:1
# mover's image: the CLI, the controller (`mover agent controller`) and the node agent
# (`mover agent node`) in one. Build from the repository root:
#
#     docker build -t mover:0.1.0 .
#
# Stage 1 compiles the Cython core into a wheel (with the wheels of every dependency); stage 2
# installs only those wheels, with no compiler and no network, and runs as an unprivileged
# user. The node agent's extra privilege (reading and writing block devices, reading the host's
# local volumes) is granted by its DaemonSet's securityContext, not baked into the image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ext ext
COPY mover mover
COPY agent/mover_k8s agent/mover_k8s
COPY agent/chart/crds agent/chart/crds
# The native core is built here (Cython, no -march: the AVX-512 kernel is chosen at run time),
# so the image runs on any x86-64 node. With the `ui` extra (Starlette, uvicorn, Jinja2: pure
# Python) for the chart's optional dashboard, `mover ui --in-cluster`.
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels '.[ui]'

FROM ${PYTHON_IMAGE} AS runtime
# Install from the build stage's wheels only (a bind mount: the wheels leave no layer behind).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links /wheels 'mover[ui]' \
    && python -c "import mover._native.cdc, mover._native.index_run, mover_k8s.cli, mover_k8s.ui.web" \
    && groupadd --system --gid 10001 mover \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin mover
# The group is made first with gid 10001: `useradd --system --user-group` would give it a system
# gid (999), leaving USER's 10001 a gid with no group.
# Non-root by default; the node agent's DaemonSet runs it as root and privileged (see the chart).
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["mover"]
CMD ["--help"]
