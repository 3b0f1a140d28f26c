# eventscope: collector, dashboard and demo shop in one image (the adapters need only `pip install eventscope`).
# EXTRAS picks what the image installs (docker-compose.yml's scale profile adds the ClickHouse store).
FROM python:3.11-slim-trixie

ARG EXTRAS=collector,dashboard
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tracer ./tracer
COPY adapters ./adapters
COPY dashboard ./dashboard
COPY demo ./demo
RUN pip install ".[${EXTRAS}]" && useradd --create-home --uid 10001 eventscope \
    && mkdir /data && chown eventscope /data
USER 10001
VOLUME ["/data"]
EXPOSE 4317 4318 8501 8502
ENTRYPOINT ["eventscope"]
CMD ["--help"]
