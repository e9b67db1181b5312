# syntax=docker/dockerfile:1
#
# The image of one service of a system built with edgeway (copied by `edgeway new service`; the
# recipe edgeway's own image follows, deploy/Dockerfile). Built from the service's folder:
#
#   docker build -t my-service:0.1.0 .
#
# Stage 1 builds the service's wheel and wheels of everything it depends on (edgeway with the
# service kit among them); stage 2 is a slim Python with only those installed, run as a user
# without a shell. Compiled dependencies come as binary wheels, so no compiler is installed; a
# dependency without one needs `apt-get install gcc` in stage 1, never in stage 2.

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
COPY src/ src/
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app \
    && mkdir /data \
    && chown 10001:10001 /data
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/app \
    && /opt/app/bin/pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl
ENV PATH=/opt/app/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EDGEWAY_HOST=0.0.0.0 \
    EDGEWAY_PORT=8000 \
    EDGEWAY_DATA_DIR=/data \
    EDGEWAY_HEALTH_URL=http://127.0.0.1:8000/health/ready
WORKDIR /data
USER 10001:10001
EXPOSE 8000
# The service kit's readiness (GET /health/ready); Kubernetes uses its own probes instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen(os.environ['EDGEWAY_HEALTH_URL'], timeout=3)"]
# The service's module: `python -m <package>` runs its __main__ (the kit's serve()).
ARG SERVICE_MODULE=app
ENV SERVICE_MODULE=${SERVICE_MODULE}
CMD ["sh", "-c", "exec python -m \"$SERVICE_MODULE\""]
