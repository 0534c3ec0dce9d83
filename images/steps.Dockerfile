# The step image: every WorkflowTemplate runs `mlcp ...` in it. Tagged with the package
# version (see pyproject.toml). Build from the repository root:
#   docker build -f images/steps.Dockerfile -t mlcp-steps:0.1.0 .
FROM python:3.11-slim

ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MLFLOW_DISABLE_TELEMETRY=true

WORKDIR /app
COPY pyproject.toml README.md ./
COPY steps ./steps
COPY workflows ./workflows
RUN pip install --no-cache-dir ".${EXTRAS}" \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin mlcp

# Non-root, matching the templates' securityContext (runAsUser 10001).
USER 10001
ENTRYPOINT ["mlcp"]
CMD ["--help"]
