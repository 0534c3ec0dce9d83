# syntax=docker/dockerfile:1
# The step image: every WorkflowTemplate runs `mlcp ...` in it, as uid 10001 (the templates'
# securityContext, workflows/common.py RUN_AS_USER). Tagged with the package version
# (pyproject.toml). It holds this project with the cv and llm extras. Build from the
# repository root (`make images` does; images/steps.Dockerfile.dockerignore keeps the
# context to the four paths copied below):
#
#   CUDA (default): PyPI's torch wheels bundle the CUDA runtime; the node's driver comes in
#   through the NVIDIA container runtime. The same image also runs on a CPU-only node.
#     docker build -f images/steps.Dockerfile -t mlcp-steps:0.1.0 .
#   CPU: torch and torchvision from a CPU-only wheel index (a far smaller image):
#     docker build -f images/steps.Dockerfile --build-arg TORCH_INDEX_URL=<cpu wheel index> \
#       -t mlcp-steps:0.1.0-cpu .
#
# EXTRAS (default [cv,llm], what `promote` needs to serve both pipelines) narrows the image,
# e.g. --build-arg EXTRAS=[cv]. TORCH_VERSION and TORCHVISION_VERSION must stay equal to the
# cv extra's pins (a test checks). BASE_IMAGE must be an official-python-style image
# (python3.11 on PATH). GIT_COMMIT: the commit of the code (the image's label
# org.opencontainers.image.revision and $MLCP_GIT_COMMIT, recorded on every run).
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX_URL=""
ARG EXTRAS="[cv,llm]"
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/mlcp/bin:$PATH
RUN python -m venv /opt/mlcp
# 1. torch first: the largest layer, and the only one that differs between the variants.
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" \
            "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"; \
    else \
        pip install --no-cache-dir "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"; \
    fi
WORKDIR /src
# 2. the dependencies, from pyproject.toml alone: a change to the code does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir steps workflows \
    && pip install --no-cache-dir "/src${EXTRAS}" \
    && pip uninstall --yes mlflow-control-plane
# 3. the code itself.
COPY steps ./steps
COPY workflows ./workflows
RUN pip install --no-cache-dir --no-deps /src \
    && mlcp --help > /dev/null

FROM ${BASE_IMAGE}
# The commit the image is built from (`make images` passes `git rev-parse HEAD`): every run
# records it as mlflow.source.git.commit (steps/records/provenance.py reads MLCP_GIT_COMMIT).
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="mlcp-steps" \
      org.opencontainers.image.description="mlflow-control-plane pipeline steps (the mlcp CLI)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${GIT_COMMIT}"
ENV PATH=/opt/mlcp/bin:$PATH \
    MLCP_GIT_COMMIT=${GIT_COMMIT} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    HF_HUB_OFFLINE=1 \
    HOME=/tmp \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin mlcp
COPY --from=build /opt/mlcp /opt/mlcp
WORKDIR /tmp
# Non-root, matching the templates' securityContext (runAsUser 10001, read-only root: the
# templates mount an emptyDir at /tmp, which is also HOME).
USER 10001:10001
ENTRYPOINT ["mlcp"]
CMD ["--help"]
