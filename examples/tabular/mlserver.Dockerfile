# syntax=docker/dockerfile:1
# MLServer for the tabular pipeline in a cluster (the chart's mlserver.image): MLServer and
# its MLflow runtime with the MLflow and scikit-learn versions the models were logged with,
# the same pins as the local stack's MLServer environment (mlcp_tabular/server.py
# REQUIREMENTS; a test checks they are equal). Runs as uid 10001 like the chart's other pods.
#   docker build -f examples/tabular/mlserver.Dockerfile -t mlcp-mlserver:0.1.0 examples/tabular
FROM python:3.11.13-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/mlserver/bin:$PATH
RUN python -m venv /opt/mlserver \
    && pip install \
        mlserver==1.7.1 \
        mlserver-mlflow==1.7.1 \
        mlflow==3.17.2 \
        scikit-learn==1.9.1
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["mlserver"]
CMD ["start", "/mlserver-models"]
