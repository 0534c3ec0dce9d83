# syntax=docker/dockerfile:1
# The CV serving image: the official Triton Inference Server image (NVIDIA's NGC catalog,
# nvidia/tritonserver, the full "-py3" flavour: onnxruntime, python and pytorch back ends and
# S3 model repositories built in), pinned to release 24.10, whose tritonserver (2.51.0) is
# the one the local stack runs. Only a non-root user and the start command are added.
#
# The registry is a build argument (this repository names no registry host): pass NGC's.
#   docker build -f images/triton.Dockerfile --build-arg TRITON_REGISTRY=<NGC registry host> \
#     -t mlcp-triton:0.1.0 images
#
# At run time it serves the model repository named by $MODEL_REPOSITORY, e.g.
# s3://minio.mlops:9000/mlcp/triton (Triton's form for an S3-compatible endpoint: host:port
# before the bucket; s3://https://host:port/... for TLS) with AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION from the environment, with explicit model
# control and --load-model=*: at start every slot of the repository is loaded at the version
# its config.pbtxt pins (the desired state `mlcp cv deploy` and `mlcp promote` write once every
# replica serves a version), so a restarted pod serves what the registry says with no step
# running; afterwards the steps load and reload the <model>-staged and <model>-live slots.
# Poll mode is not used: it forbids the load API the steps confirm each switch with, and it
# would read an S3 entry whose upload is half done.
# The control key is read from the file $MLCP_TRITON_CONTROL_KEY_FILE names (the chart mounts
# it from a Secret; no Secret is in the pod's environment), else from $MLCP_TRITON_CONTROL_KEY.
# tritonserver takes it only as an argument, so it is in the server's own command line.
# With a key, the model-repository API (load, unload, index) answers
# only requests carrying it in the mlcp-control-key header (over gRPC:
# triton-grpc-protocol-mlcp-control-key), as mlcp sends it; inference, health and metadata
# stay open. Extra arguments are passed to tritonserver.
ARG TRITON_REGISTRY
FROM ${TRITON_REGISTRY}/nvidia/tritonserver:24.10-py3

LABEL org.opencontainers.image.title="mlcp-triton" \
      org.opencontainers.image.description="Triton Inference Server with explicit model control for mlflow-control-plane"
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin mlcp
# S3 repositories are copied to a temporary folder: /tmp (an emptyDir when the root
# filesystem is read-only).
ENV MODEL_REPOSITORY="" \
    AWS_DEFAULT_REGION=us-east-1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000 8001 8002
ENTRYPOINT ["/bin/sh", "-c", "if [ -z \"$MODEL_REPOSITORY\" ]; then echo 'MODEL_REPOSITORY is not set (e.g. s3://host:port/bucket/triton)' >&2; exit 2; fi; if [ -z \"$MLCP_TRITON_CONTROL_KEY\" ] && [ -n \"$MLCP_TRITON_CONTROL_KEY_FILE\" ]; then MLCP_TRITON_CONTROL_KEY=$(cat \"$MLCP_TRITON_CONTROL_KEY_FILE\") || exit 2; fi; if [ -n \"$MLCP_TRITON_CONTROL_KEY\" ]; then set -- \"--http-restricted-api=model-repository:mlcp-control-key=$MLCP_TRITON_CONTROL_KEY\" \"--grpc-restricted-protocol=model-repository:mlcp-control-key=$MLCP_TRITON_CONTROL_KEY\" \"$@\"; fi; exec tritonserver --model-repository=\"$MODEL_REPOSITORY\" --model-control-mode=explicit '--load-model=*' --strict-readiness=true --http-port=8000 --grpc-port=8001 --metrics-port=8002 \"$@\"", "tritonserver"]
CMD []
