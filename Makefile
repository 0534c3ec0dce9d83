# Every target that a person runs is listed by `make help` from its `##` comment.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test lint demo bench stack-up stack-down clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml examples/tabular/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,cv,llm]'
	$(PY) -m pip install --quiet -e examples/tabular  # the third pipeline, a package of its own
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with the dev, cv and llm extras, and the tabular pipeline (examples/tabular)

# Two worker processes (pytest-xdist), each with its own stack; tests go to a worker by group
# (tests/conftest.py says which). `make test PYTEST_WORKERS=0` runs them in one process.
PYTEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder)
# pytest's exit 5 (no test collected) is a failure here, not a pass
PYTEST = rc=0; $(PY) -m pytest $(XDIST) $(1) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test: $(STAMP) ## run the whole test suite (it starts its own MLflow, S3 endpoint, tritonserver and vLLM)
	@$(call PYTEST,)

.PHONY: test-fast
test-fast: $(STAMP) ## the tests that need no server (units, contracts, layout, docs, chart): a few minutes
	@$(call PYTEST,-m "not stack")

lint: $(STAMP) ## ruff check and format check, and the import contracts (import-linter)
	$(PY) -m ruff check steps workflows tests examples
	$(PY) -m ruff format --check steps workflows tests examples
	$(VENV)/bin/lint-imports --no-cache

demo: $(STAMP) ## start the local stack, publish the data, run the CV chain (again: v2 live)
	$(VENV)/bin/mlcp stack up
	$(VENV)/bin/mlcp data cv
	$(VENV)/bin/mlcp cv chain

.PHONY: demo-llm
LLM_MODEL ?= tiny-llama-instruct
demo-llm: $(STAMP) ## start the local stack, publish the LLM data and base, run the LLM chain (vLLM)
	$(VENV)/bin/mlcp stack up --services mlflow,s3,vllm
	$(VENV)/bin/mlcp data llm
	$(VENV)/bin/mlcp llm chain --model-name $(LLM_MODEL)
	@echo "== the answers the judge graded wrong in the evaluation of $(LLM_MODEL)@live (MLflow traces):"
	$(VENV)/bin/mlcp traces $(LLM_MODEL)@live --grade wrong
	@echo "== every traced answer: mlcp traces $(LLM_MODEL)@live; in the UI: the experiment llm/evaluate, tab Traces"

bench: $(STAMP) ## control-plane latency vs its REST floor, chains, Triton/MLServer vs mlflow serve, switches, the router and a rollout under load: a table
	$(PY) -m tests.bench

.PHONY: yaml
yaml: $(STAMP) ## regenerate the WorkflowTemplate YAML under charts/mlcp/files/workflows/ (every installed pipeline, or PIPELINES="cv tabular")
	$(PY) -m workflows.build $(PIPELINES)
	$(PY) -m steps.registry.router

.PHONY: docs docs-serve screenshots
MKDOCS := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs
docs: $(STAMP) ## regenerate the reference pages from the code (steps/docs.py), then build the site into site/ (strict)
	$(PY) -m steps.docs
	$(MKDOCS) build --strict

docs-serve: $(STAMP) ## regenerate the reference pages and serve the site on http://127.0.0.1:8008
	$(PY) -m steps.docs
	$(MKDOCS) serve --dev-addr 127.0.0.1:8008

screenshots: $(STAMP) ## MLflow UI screenshots for the site (docs/images/ui-*.png), after make demo and make demo-llm (needs chromium)
	$(PY) -m tests.screenshots

stack-up: $(STAMP) ## start the local stack (MLflow, S3 endpoint, tritonserver) under .mlcp/
	$(VENV)/bin/mlcp stack up

stack-down: $(STAMP) ## stop the local stack
	$(VENV)/bin/mlcp stack down

clean: ## stop the stack and remove .mlcp/ and the virtual environment
	-$(VENV)/bin/mlcp stack down
	rm -rf .mlcp $(VENV)

# The digest of an image just built, for the chart's values (<component>.image.digest): its
# registry digest (RepoDigests) once it has been pushed, else its local image id, which a push
# keeps as the image's config digest.
IMAGE_DIGEST = docker image inspect --format '{{if .RepoDigests}}{{index .RepoDigests 0}}{{else}}{{.Id}}{{end}}'
define print_digest
	@printf 'built %s  digest: %s\n' "$(1)" "$$($(IMAGE_DIGEST) $(1))"
endef

.PHONY: images
images: ## build the step image (CUDA; CPU with TORCH_INDEX_URL=...) and the serving images, with docker; prints each digest
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { \
		echo "make images: no docker engine here (docker missing or not running): nothing built."; \
		echo "The Dockerfiles are under images/; every one is checked by hadolint in make test."; exit 1; }
	$(eval VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml))
	$(eval GIT_COMMIT := $(shell git rev-parse HEAD 2>/dev/null || echo unknown))
	docker build -f images/steps.Dockerfile --build-arg GIT_COMMIT=$(GIT_COMMIT) -t mlcp-steps:$(VERSION) .
	$(call print_digest,mlcp-steps:$(VERSION))
	@if [ -n "$(TORCH_INDEX_URL)" ]; then \
		docker build -f images/steps.Dockerfile --build-arg TORCH_INDEX_URL="$(TORCH_INDEX_URL)" \
			--build-arg GIT_COMMIT=$(GIT_COMMIT) -t mlcp-steps:$(VERSION)-cpu . && \
		printf 'built %s  digest: %s\n' mlcp-steps:$(VERSION)-cpu "$$($(IMAGE_DIGEST) mlcp-steps:$(VERSION)-cpu)"; \
	else echo "mlcp-steps:$(VERSION)-cpu skipped: set TORCH_INDEX_URL to a CPU-only PyTorch wheel index"; fi
	docker build -f images/vllm.Dockerfile -t mlcp-vllm:$(VERSION) .
	$(call print_digest,mlcp-vllm:$(VERSION))
	docker build -f images/mlflow.Dockerfile -t mlcp-mlflow:$(VERSION) images
	$(call print_digest,mlcp-mlflow:$(VERSION))
	@if [ -n "$(TRITON_REGISTRY)" ]; then \
		docker build -f images/triton.Dockerfile --build-arg TRITON_REGISTRY="$(TRITON_REGISTRY)" \
			-t mlcp-triton:$(VERSION) images && \
		printf 'built %s  digest: %s\n' mlcp-triton:$(VERSION) "$$($(IMAGE_DIGEST) mlcp-triton:$(VERSION))"; \
	else echo "mlcp-triton:$(VERSION) skipped: set TRITON_REGISTRY to NVIDIA's NGC registry host"; fi
