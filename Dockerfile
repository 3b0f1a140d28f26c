# eventscope: collector, dashboard and demo shop in one image (the adapters need only `pip install eventscope`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tracer ./tracer
COPY adapters ./adapters
COPY dashboard ./dashboard
COPY demo ./demo
RUN pip install ".[collector,dashboard]" && useradd --create-home --uid 10001 eventscope \
    && mkdir /data && chown eventscope /data
USER eventscope
VOLUME ["/data"]
EXPOSE 4317 4318 8501
ENTRYPOINT ["eventscope"]
CMD ["--help"]
