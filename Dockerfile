# syntax=docker/dockerfile:1
# One image for every tokentide process: `tokentide ingest|streams|sink|dashboard|migrate|admin`.
#
#   docker build -t tokentide:dev .
#   docker run --rm tokentide:dev --help
#
# Three stages: `web` fetches the web UI's chart library from npm (dashboard/web/package-lock.json);
# `build` installs the locked environment (uv.lock, no dev group) into /opt/tokentide with uv;
# `runtime` is the slim Python base plus that environment, run as an unprivileged user.
# The root filesystem can be read-only: bytecode is compiled at build time, and the only writable
# path a process needs is TOKENTIDE_DATA_DIR (the streams worker's RocksDB state; a volume).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:22-bookworm-slim

# The web UI's chart library, from the npm registry at the locked version (no CDN at run time).
FROM ${NODE_IMAGE} AS web
WORKDIR /web
COPY dashboard/web/package.json dashboard/web/package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts --loglevel=error \
 && mkdir vendor && cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css vendor/

FROM ${PYTHON_IMAGE} AS build
# Same uv as the Makefile (UV_VERSION), from PyPI.
ARG UV_VERSION=0.13.8
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/tokentide \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first (a layer that changes only with uv.lock), then the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
COPY tokentide ./tokentide
COPY ingest ./ingest
COPY streams ./streams
COPY sinks ./sinks
COPY dashboard ./dashboard
COPY notify ./notify
COPY --from=web /web/vendor ./dashboard/static/vendor
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable \
 && /opt/tokentide/bin/tokentide --version

FROM ${PYTHON_IMAGE} AS runtime
ARG TOKENTIDE_UID=10001
LABEL org.opencontainers.image.title="tokentide" \
      org.opencontainers.image.description="Token, cost and context-window accounting for AI coding agents" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid "${TOKENTIDE_UID}" tokentide \
 && useradd --system --uid "${TOKENTIDE_UID}" --gid tokentide --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin tokentide \
 && install -d -o tokentide -g tokentide -m 0750 /var/lib/tokentide /var/lib/tokentide/streams
COPY --from=build /opt/tokentide /opt/tokentide
# Services listen on every interface inside the container (the settings' default is loopback).
ENV PATH=/opt/tokentide/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TOKENTIDE_HOST=0.0.0.0 \
    TOKENTIDE_DATA_DIR=/var/lib/tokentide/streams
WORKDIR /var/lib/tokentide
# ingest OTLP/HTTP, OTLP/gRPC; streams; sink; dashboard
EXPOSE 4318 4317 6066 9464 8000
USER ${TOKENTIDE_UID}:${TOKENTIDE_UID}
ENTRYPOINT ["tokentide"]
CMD ["--help"]
