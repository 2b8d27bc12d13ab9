# The gateway as a small image: a slim Python, the project and its run-time dependencies
# at the versions pinned in requirements.lock, running as an unprivileged user.
#   docker build -t open-model-gateway .
#   docker run -p 8080:8080 open-model-gateway
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/gateway
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY gateway ./gateway
# The lock pins every package, test tools included; as constraints it installs exactly the
# pinned versions of what the gateway needs at run time and nothing more.
RUN /opt/gateway/bin/pip install --constraint requirements.lock .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway \
    && mkdir -p /data /app \
    && chown gateway /data
COPY --from=build /opt/gateway /opt/gateway
COPY policies /app/policies
WORKDIR /app
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_CONFIG=/app/policies/default.yaml \
    GATEWAY_DATA_DIR=/data
USER 10001
EXPOSE 8080
VOLUME ["/data"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('GATEWAY_PORT', '8080'), timeout=2)"]
# SIGTERM drains in-flight streams for GATEWAY_SHUTDOWN_GRACE_S, flushes usage, exits 0.
STOPSIGNAL SIGTERM
CMD ["gateway", "serve"]
