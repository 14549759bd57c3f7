# The API image: `docker compose build` (docker-compose.yml) or `docker build -t materials-graphql .`
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 PORT=8000 DATA_DIR=/data
WORKDIR /app

# Dependencies first (a layer that changes only with pyproject.toml), then the code.
COPY pyproject.toml README.md ./
COPY backends ./backends
COPY middleware ./middleware
COPY schema ./schema
COPY resolvers ./resolvers
COPY loaders ./loaders
COPY server.py ./
RUN pip install . && useradd --create-home --uid 10001 api && mkdir -p /data && chown api /data
USER api

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2).status != 200)"
CMD ["python", "server.py", "serve"]
