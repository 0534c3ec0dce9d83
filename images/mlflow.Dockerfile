# syntax=docker/dockerfile:1
# The MLflow tracking server of the chart (mlflow.enabled): the same mlflow as the steps
# (pyproject.toml), with the PostgreSQL driver for the backend store and boto3 for S3
# artifacts, as uid 10001. Build:
#   docker build -f images/mlflow.Dockerfile -t mlcp-mlflow:0.1.0 images
FROM python:3.11.13-slim-bookworm

LABEL org.opencontainers.image.title="mlcp-mlflow" \
      org.opencontainers.image.description="MLflow tracking server (PostgreSQL backend, S3 artifacts) for mlflow-control-plane"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    HOME=/tmp
RUN pip install --no-cache-dir "mlflow[auth]==3.17.2" boto3==1.44.5 psycopg2-binary==2.9.13 \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin mlcp
WORKDIR /tmp
USER 10001:10001
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000"]
