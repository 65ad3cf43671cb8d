# syntax=docker/dockerfile:1
#
# nifty-engine in a container: `live` by default, state (SQLite database, logs, control socket)
# in the /data volume. See docs/operations/deployment.md.
#
#   docker build -t nifty-engine .
#   docker run -d --name nifty-engine --env-file deploy/env \
#     -v nifty-engine-data:/data --stop-timeout 45 nifty-engine
#
# Stopping: SIGTERM starts the engine's graceful stop ([engine] on_signal), which may take up to
# [engine] shutdown_timeout_s (30 s by default). Docker's default grace is 10 s before SIGKILL,
# so give it more: `docker stop -t 45`, `docker run --stop-timeout 45`, or compose's
# `stop_grace_period: 45s`.

# ---- build: a wheel of the project (no compiler needed: every dependency ships wheels) ----------
FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
# Only what `pip install .` reads (setup.cfg's long_description is README.md).
COPY pyproject.toml setup.cfg README.md run.py ./
COPY engine/ engine/
COPY actors/ actors/
COPY strategies/ strategies/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- runtime ----------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="nifty-engine" \
      org.opencontainers.image.description="Headless actor-model trading engine for NIFTY options over OpenAlgo" \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    NIFTY_ENGINE__ENGINE__STATE_DIR=/data \
    NIFTY_ENGINE__STORE__PATH=/data/engine.db \
    NIFTY_ENGINE__CONTROL__SOCKET_PATH=/data/control/engine.sock

# A dedicated unprivileged user. The control socket only answers its owner's uid, so operator
# commands run with `docker exec` (which uses this USER by default) and the HEALTHCHECK below
# reach it; `docker exec -u root` would be refused.
RUN groupadd --system --gid 10001 engine \
 && useradd --system --uid 10001 --gid engine --home-dir /home/engine --create-home \
      --shell /usr/sbin/nologin engine \
 && mkdir -p /data \
 && chown engine:engine /data \
 && chmod 0700 /data

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/*.whl

# ./config.toml in the working directory is the engine's default config file: every setting at
# its default. Mount your own over it (-v ./config.toml:/app/config.toml:ro) or pass
# --config. The environment above (NIFTY_ENGINE__SECTION__KEY) wins over the file.
WORKDIR /app
COPY config.toml ./config.toml

VOLUME ["/data"]
# Numeric, so a runtime (Kubernetes runAsNonRoot) can tell it is not root: uid/gid of "engine".
USER 10001:10001

# Healthy = a running engine answers `status` on its control socket (exit 0); no engine, or no
# answer within the client timeout, exits non-zero. It does not judge trading health (feed,
# broker): read the status text (`docker inspect`) or the logs for that. Start-up (broker quote,
# reconciliation, history backfill) can take a while, hence the start period.
HEALTHCHECK --interval=30s --timeout=15s --start-period=120s --retries=3 \
    CMD ["nifty-engine", "status", "--set", "control.client_timeout_s=10"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["nifty-engine"]
CMD ["live"]
