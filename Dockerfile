# Lunara: multi-stage image. Build wheels from the lock, then a slim non-root runtime.
#   docker build -t lunara .
#   docker run -d --name lunara -v lunara-home:/data --env-file .env lunara
# No port is exposed: the bot is a worker. For platforms that insist on a web port,
# set PORT (or LUNARA_HEALTH_PORT) and publish it yourself (`-p 8080:8080 -e PORT=8080`).

FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements/prod.lock requirements/prod.lock
RUN python -m pip wheel --no-cache-dir --require-hashes -r requirements/prod.lock -w /wheels
COPY pyproject.toml README.md ./
COPY blueprint blueprint
COPY lunara lunara
RUN python -m pip wheel --no-cache-dir --no-deps . -w /wheels

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPENBLAS_NUM_THREADS=1 \
    LUNARA_HOME=/data \
    LUNARA_MANIFEST=/app/manifest.json
RUN groupadd --system lunara && useradd --system --gid lunara --home-dir /app --shell /usr/sbin/nologin lunara
WORKDIR /app
COPY --from=build /wheels /wheels
COPY requirements/prod.lock /tmp/prod.lock
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels --require-hashes -r /tmp/prod.lock \
 && python -m pip install --no-cache-dir --no-index --find-links /wheels --no-deps lunara \
 && rm -rf /wheels /tmp/prod.lock
COPY --chmod=0644 manifest.json /app/manifest.json
RUN mkdir -p /data && chown lunara:lunara /data
VOLUME ["/data"]
USER lunara
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["lunara", "status", "--quiet"]
# The foreground watchdog: forwards SIGTERM/SIGINT to the bot and reaps children as PID 1.
ENTRYPOINT ["lunara", "run"]
