# The worker image: slim, non-root, no torch (training happens elsewhere; mount the model at
# /model). Two stages: wheels are built with pip's toolchain, the runtime gets only the wheels.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamrec ./streamrec
# extras: the PostgreSQL driver; confluent-kafka, the optional output client
# (STREAMREC_OUTPUT_CLIENT=confluent-kafka)
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres,confluent]"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STREAMREC_METRICS_HOST=0.0.0.0 \
    STREAMREC_METRICS_PORT=9108 \
    STREAMREC_MODEL_DIR=/model \
    STREAMREC_LOG_JSON=true
RUN groupadd --gid 10001 streamrec \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin streamrec
# dependencies from the wheels; streamrec itself runs from /app so that migrations/ sits next to
# the package (streamrec.state finds its Alembic scripts relative to the source tree)
COPY --from=build /wheels /wheels
RUN find /wheels -name 'streamrec-*.whl' -delete \
    && pip install --no-cache-dir --no-index /wheels/*.whl \
    && rm -rf /wheels
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations
COPY streamrec ./streamrec
USER 10001:10001
EXPOSE 9108
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['STREAMREC_METRICS_PORT'] + '/healthz', timeout=3)"]
ENTRYPOINT ["python", "-m", "streamrec"]
CMD ["run"]
