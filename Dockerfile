# The worker image: slim, non-root, no torch (training happens elsewhere; mount the model).
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 streamrec
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY streamrec ./streamrec
COPY migrations ./migrations
RUN pip install --no-cache-dir ".[postgres]"
USER streamrec
ENV STREAMREC_METRICS_HOST=0.0.0.0
EXPOSE 9108
ENTRYPOINT ["streamrec"]
CMD ["run"]
