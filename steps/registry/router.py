"""The router in front of serving: Envoy, with each model's traffic split by weight between
its live slot and one other slot (a canary during a rollout, the warm previous version for a
rollback by flip), and the weights kept as desired state.

What a client calls is the model's stable name at the router: ``/v2/models/<model>/...``
(Triton's HTTP API) or ``"model": "<model>"`` (the OpenAI API of vLLM). The router sends each
request to ``<model>-live`` or to the other slot, drawn at random per request with the
model's weight (percent). Two ways, one per protocol (docs/concepts/router.md says why):

- ``v2`` (Triton's HTTP paths): two routes on the prefix ``/v2/models/<model>/``, the first
  with a ``runtime_fraction`` of the weight and a ``prefix_rewrite`` to the other slot, the
  second to the live slot;
- ``openai`` (vLLM): the model is in the JSON body. A Lua filter reads it, names it in the
  header ``x-mlcp-model`` and clears the route cache; the routes then match that header with
  the same fractions, and the Lua filter writes the chosen slot (the route's metadata) into
  the body's ``model`` field.

Each slot has its own Envoy cluster (``<model>--live``, ``<model>--canary``; both point at
the same server), so Envoy counts requests, responses by class and an ``upstream_rq_time``
histogram per version: what a rollout step is judged on (steps/stages/rollout.py).

Desired state: ``state.json`` (one entry per model: the server's addresses, the protocol, the
other slot, the weight) and the two files Envoy reads, ``clusters.json`` (CDS) and
``routes.json`` (RDS), rendered from it. Envoy watches their folder (``watched_directory``):
a file moved into place is applied without a restart or a dropped connection, and a
restarted router reads the same files, so it routes as recorded with nobody acting. Locally
the folder is ``.mlcp/router/config`` (``MLCP_ROUTER_CONFIG_DIR``); in the cluster it is one
named ConfigMap mounted into the router's pod (``MLCP_ROUTER_CONFIGMAP``, patched through
the Kubernetes API; the step's RBAC grants get and patch on that one object only).

Envoy's admin interface stays on the loopback address of the router's own host or pod. A
second listener (``MLCP_ROUTER_STATS_URL``) answers exactly ``/stats/prometheus``,
``/config_dump`` and ``/ready`` from it, read-only: the steps read the statistics and the
weights Envoy applied there, and nothing reachable changes Envoy.

Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from ..base.environment import (
    KUBERNETES_SERVICE_HOST,
    KUBERNETES_SERVICE_PORT,
    MLCP_ROUTER_APPLY_TIMEOUT_S,
    MLCP_ROUTER_CONFIG_DIR,
    MLCP_ROUTER_CONFIGMAP,
    MLCP_ROUTER_STATS_URL,
    MLCP_ROUTER_URL,
)
from ..base.errors import BadInput, MlcpError

URL_ENV = MLCP_ROUTER_URL.name  # where clients call the models
STATS_ENV = MLCP_ROUTER_STATS_URL.name  # the read-only statistics listener
CONFIG_DIR_ENV = MLCP_ROUTER_CONFIG_DIR.name  # local: the folder Envoy watches
CONFIGMAP_ENV = MLCP_ROUTER_CONFIGMAP.name  # cluster: namespace/name of the ConfigMap it watches
STATE_FILE, CLUSTERS_FILE, ROUTES_FILE = "state.json", "clusters.json", "routes.json"
ROUTE_CONFIG = "mlcp"  # the RDS route configuration's name
MODEL_HEADER = "x-mlcp-model"
LUA_FILTER = "envoy.filters.http.lua"
PROTOCOLS = ("v2", "openai")
LIVE_ROLE, CANARY_ROLE = "live", "canary"
# Envoy's request-time histograms, in ms: 5% steps from 0.1 ms to ~2 min, so that a p95 read
# from the buckets is within 5% of the one from the requests.
BUCKETS_MS = tuple(round(0.1 * 1.05**i, 4) for i in range(290))
STATS_FLUSH_S = 1.0  # how often Envoy merges histograms into what /stats shows
APPLY_TIMEOUT_S = (
    MLCP_ROUTER_APPLY_TIMEOUT_S.default
)  # default wait for the router to report new weights
APPLY_TIMEOUT_ENV = MLCP_ROUTER_APPLY_TIMEOUT_S.name  # the chart sets it above kubelet's delay
ROUTE_TIMEOUT = "120s"

# Reads the model from an OpenAI request's JSON body, routes on it, and rewrites it into the
# slot the chosen route names. The header is set by the router only: a client's is removed.
LUA = """
function envoy_on_request(h)
  h:headers():remove("@HEADER@")
  local path = h:headers():get(":path") or ""
  if string.sub(path, 1, 4) ~= "/v1/" or h:headers():get(":method") ~= "POST" then return end
  local body = h:body()
  if body == nil then return end
  local text = body:getBytes(0, body:length())
  local model = string.match(text, '"model"%s*:%s*"([^"]+)"')
  if model == nil then return end
  h:headers():replace("@HEADER@", model)
  h:clearRouteCache()
  local slot = h:metadata():get("slot")
  if slot == nil then return end
  local rewritten = string.gsub(text, '("model"%s*:%s*")[^"]+"', "%1" .. slot .. '"', 1)
  body:setBytes(rewritten)
end
""".replace("@HEADER@", MODEL_HEADER)


@dataclass
class Route:
    """One model at the router: the servers of its slots, and the share of the other slot."""

    model: str
    protocol: str  # v2 | openai
    upstreams: list[str]  # host:port of every replica of its server
    live_slot: str
    canary_slot: str  # the other slot: a canary during a rollout, previous for a flip
    weight: int = 0  # percent of the requests sent to canary_slot

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise BadInput(f"unknown router protocol {self.protocol!r}; choose {PROTOCOLS}")
        check_weight(self.weight)
        if not self.upstreams:
            raise BadInput(f"the route of {self.model} names no server")


def check_weight(weight: int) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise BadInput(f"a weight is a whole percent from 0 to 100, got {weight!r}")
    return weight


def cluster_name(model: str, role: str) -> str:
    return f"{model}--{role}"


def _host_port(address: str) -> tuple[str, int]:
    address = address.split("://", 1)[-1].rstrip("/")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise BadInput(f"a server address is host:port, got {address!r}")
    return host, int(port)


# ------------------------------------------------------------------------------ rendering


def _cluster(name: str, upstreams: list[str]) -> dict:
    endpoints = []
    for address in upstreams:
        host, port = _host_port(address)
        socket = {"socket_address": {"address": host, "port_value": port}}
        endpoints.append({"endpoint": {"address": socket}})
    return {
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name,
        "type": "STRICT_DNS",  # a service name in the cluster, an address locally
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
    }


def render_clusters(routes: dict[str, Route]) -> dict:
    resources = [
        _cluster(cluster_name(r.model, role), r.upstreams)
        for r in routes.values()
        for role in (CANARY_ROLE, LIVE_ROLE)
    ]
    return {"version_info": _digest(resources), "resources": resources}


def _routes_of(route: Route) -> list[dict]:
    fraction = {
        "default_value": {"numerator": route.weight, "denominator": "HUNDRED"},
        "runtime_key": f"mlcp.weight.{route.model}",  # never set: the default is the weight
    }
    found = []
    for role, slot in ((CANARY_ROLE, route.canary_slot), (LIVE_ROLE, route.live_slot)):
        action = {"cluster": cluster_name(route.model, role), "timeout": ROUTE_TIMEOUT}
        if route.protocol == "v2":
            match: dict = {"prefix": f"/v2/models/{route.model}/"}
            action["prefix_rewrite"] = f"/v2/models/{slot}/"
        else:
            match = {
                "prefix": "/v1/",
                "headers": [{"name": MODEL_HEADER, "string_match": {"exact": route.model}}],
            }
        if role == CANARY_ROLE:
            match["runtime_fraction"] = fraction
        found.append(
            {
                "name": cluster_name(route.model, role),
                "match": match,
                "route": action,
                "metadata": {"filter_metadata": {LUA_FILTER: {"slot": slot}}},
            }
        )
    return found


def render_routes(routes: dict[str, Route]) -> dict:
    config = {
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": ROUTE_CONFIG,
        "virtual_hosts": [
            {
                "name": "models",
                "domains": ["*"],
                "routes": [r for route in routes.values() for r in _routes_of(route)],
            }
        ],
    }
    return {"version_info": _digest(config), "resources": [config]}


def _digest(data) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def bootstrap(config_dir: Path, *, port: int, stats_port: int, admin_port: int, host: str) -> dict:
    """Envoy's bootstrap: the traffic listener (RDS from ``routes.json``), the read-only
    statistics listener, clusters from ``clusters.json`` (CDS), admin on loopback only."""

    def watched(name: str) -> dict:
        return {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": str(config_dir / name),
                "watched_directory": {"path": str(config_dir)},
            },
        }

    def listener(name: str, listen_port: int, manager: dict) -> dict:
        manager = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
            "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": name,
            **manager,
        }
        return {
            "name": name,
            "address": {"socket_address": {"address": host, "port_value": listen_port}},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": manager,
                        }
                    ]
                }
            ],
        }

    router_filter = {
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        },
    }
    lua = {
        "name": LUA_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": LUA},
        },
    }
    read_only = [
        {
            "match": {
                "path": path,
                "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
            },
            "route": {"cluster": "admin"},
        }
        for path in ("/stats/prometheus", "/config_dump", "/ready")
    ]
    admin_address = {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
    return {
        "node": {"id": "mlcp-router", "cluster": "mlcp"},
        "admin": {"address": admin_address},
        "stats_flush_interval": f"{STATS_FLUSH_S:g}s",
        "stats_config": {
            "histogram_bucket_settings": [
                {"match": {"suffix": "upstream_rq_time"}, "buckets": list(BUCKETS_MS)}
            ]
        },
        "dynamic_resources": {"cds_config": watched(CLUSTERS_FILE)},
        "static_resources": {
            "listeners": [
                listener(
                    "traffic",
                    port,
                    {
                        "rds": {
                            "route_config_name": ROUTE_CONFIG,
                            "config_source": watched(ROUTES_FILE),
                        },
                        "http_filters": [lua, router_filter],
                    },
                ),
                listener(
                    "stats",
                    stats_port,
                    {
                        "route_config": {
                            "name": "stats",
                            "virtual_hosts": [
                                {"name": "stats", "domains": ["*"], "routes": read_only}
                            ],
                        },
                        "http_filters": [router_filter],
                    },
                ),
            ],
            "clusters": [
                {
                    "name": "admin",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "admin",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": admin_address}}]}],
                    },
                }
            ],
        },
    }


def render(routes: dict[str, Route]) -> dict[str, str]:
    """The three files of the router's desired state, as text."""
    return {
        STATE_FILE: json.dumps({m: asdict(r) for m, r in sorted(routes.items())}, indent=2),
        CLUSTERS_FILE: json.dumps(render_clusters(routes), indent=1),
        ROUTES_FILE: json.dumps(render_routes(routes), indent=1),
    }


def parse_state(text: str) -> dict[str, Route]:
    try:
        return {m: Route(**data) for m, data in json.loads(text or "{}").items()}
    except (ValueError, TypeError) as exc:
        raise MlcpError(f"the router's {STATE_FILE} cannot be read: {exc}") from exc


# ------------------------------------------------------------------------------ the store


class FolderStore:
    """The local router's folder: each file written beside its final name and moved over it
    (clusters before routes, so a route never names a cluster Envoy lacks)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def read(self) -> dict[str, Route]:
        path = self.folder / STATE_FILE
        return parse_state(path.read_text() if path.is_file() else "")

    def write(self, routes: dict[str, Route]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        files = render(routes)
        for name in (STATE_FILE, CLUSTERS_FILE, ROUTES_FILE):
            staging = self.folder / f".{name}.tmp"
            staging.write_text(files[name])
            os.replace(staging, self.folder / name)


class ConfigMapStore:
    """The router's ConfigMap in the cluster, read and merge-patched through the Kubernetes
    API with the pod's service account (its Role grants get and patch on this one object).
    Kubelet swaps the mounted files at once; Envoy's ``watched_directory`` sees the swap."""

    SA = Path("/var/run/secrets/kubernetes.io/serviceaccount")

    def __init__(self, ref: str):
        namespace, _, name = ref.rpartition("/")
        if not name:
            raise BadInput(f"{CONFIGMAP_ENV} is namespace/name, got {ref!r}")
        self.namespace = namespace or (self.SA / "namespace").read_text().strip()
        self.name = name

    def _call(self, method: str, body: dict | None = None) -> dict:
        host = KUBERNETES_SERVICE_HOST.get()
        port = KUBERNETES_SERVICE_PORT.get()
        url = f"https://{host}:{port}/api/v1/namespaces/{self.namespace}/configmaps/{self.name}"
        request = urllib.request.Request(url, method=method)
        request.add_header("Authorization", f"Bearer {(self.SA / 'token').read_text().strip()}")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/merge-patch+json")
        context = ssl.create_default_context(cafile=str(self.SA / "ca.crt"))
        try:
            with urllib.request.urlopen(request, data=data, timeout=30, context=context) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError) as exc:
            raise MlcpError(f"the router's ConfigMap {self.namespace}/{self.name}: {exc}") from exc

    def read(self) -> dict[str, Route]:
        return parse_state(self._call("GET").get("data", {}).get(STATE_FILE, ""))

    def write(self, routes: dict[str, Route]) -> None:
        self._call("PATCH", {"data": render(routes)})


def store():
    """Where the router's desired state lives: the ConfigMap (cluster) or the folder (local);
    MlcpError when neither is configured."""
    if MLCP_ROUTER_CONFIGMAP.is_set():
        return ConfigMapStore(MLCP_ROUTER_CONFIGMAP.get())
    folder = MLCP_ROUTER_CONFIG_DIR.get()
    if folder:
        return FolderStore(Path(folder))
    raise MlcpError(
        f"no router is configured: set {CONFIG_DIR_ENV} (the local stack's router writes it "
        f"into .mlcp/env; `mlcp stack up --services ...,router`) or {CONFIGMAP_ENV}"
    )


# ------------------------------------------------------------------------------ reading Envoy


def stats_url() -> str:
    url = MLCP_ROUTER_STATS_URL.get()
    if not url:
        raise MlcpError(f"{STATS_ENV} is not set: the router's statistics cannot be read")
    return url.rstrip("/")


def _get(path: str, timeout: float = 5.0) -> str:
    url = stats_url() + path
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise MlcpError(f"the router does not answer at {url}: {exc}") from exc


def ready() -> bool:
    try:
        return _get("/ready", 2.0).strip() == "LIVE"
    except MlcpError:
        return False


def applied() -> dict[str, tuple[int, str]]:
    """What Envoy routes now, per model: (weight, the other slot), read from its config dump."""
    dump = json.loads(_get("/config_dump?resource=dynamic_route_configs"))
    found: dict[str, tuple[int, str]] = {}
    for config in dump.get("configs", []):
        route_config = config.get("route_config", {})
        for host in route_config.get("virtual_hosts", []):
            for route in host.get("routes", []):
                name = route.get("name", "")
                model, _, role = name.rpartition("--")
                if role != CANARY_ROLE:
                    continue
                fraction = route["match"].get("runtime_fraction", {}).get("default_value", {})
                slot = route.get("metadata", {}).get("filter_metadata", {}).get(LUA_FILTER, {})
                found[model] = (int(fraction.get("numerator", 0)), slot.get("slot", ""))
    return found


def wait_applied(routes: dict[str, Route], timeout: float | None = None) -> float:
    """Wait until Envoy reports the weights of ``routes``; the seconds it took (MlcpError
    after ``timeout``, default ``$MLCP_ROUTER_APPLY_TIMEOUT_S`` else 60 s: the router is down
    or has not picked the change up; in the cluster kubelet takes up to its sync period plus
    its ConfigMap cache TTL, about a minute by default, to swap the mounted files)."""
    if timeout is None:
        timeout = MLCP_ROUTER_APPLY_TIMEOUT_S.get()
    started = time.monotonic()
    wanted = {m: (r.weight, r.canary_slot) for m, r in routes.items()}
    while True:
        try:
            now = applied()
        except (MlcpError, ValueError):
            now = {}
        if all(now.get(m) == w for m, w in wanted.items()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise MlcpError(
                f"the router did not report the weights {wanted} within {timeout:.0f} s "
                f"(it reports {now or 'nothing'})"
            )
        time.sleep(0.1)


@dataclass
class ClusterStats:
    """One cluster's cumulative counts: responses by class, and the request-time histogram
    (cumulative counts per upper bound, in ms)."""

    responses: dict[str, int]  # "2", "4", "5" -> count
    buckets: list[tuple[float, int]]

    @property
    def completed(self) -> int:
        return sum(self.responses.values())

    @property
    def failed(self) -> int:
        return sum(n for cls, n in self.responses.items() if cls != "2")

    def minus(self, before: ClusterStats) -> ClusterStats:
        responses = {k: v - before.responses.get(k, 0) for k, v in self.responses.items()}
        earlier = dict(before.buckets)
        return ClusterStats(responses, [(le, n - earlier.get(le, 0)) for le, n in self.buckets])

    def latencies_ms(self) -> list[float]:
        """The request times the histogram holds, one per request, each its bucket's
        geometric middle (the last bucket: its lower bound)."""
        found: list[float] = []
        lower, previous = 0.0, 0
        for le, cumulative in self.buckets:
            count = cumulative - previous
            if count > 0:
                value = lower * 1.0 if le == float("inf") else (max(lower, le / 1.05) * le) ** 0.5
                found += [value] * count
            previous, lower = cumulative, (lower if le == float("inf") else le)
        return found


LINE = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def cluster_stats(clusters: list[str]) -> dict[str, ClusterStats]:
    """The counts of ``clusters`` now, from the router's ``/stats/prometheus``."""
    text = _get("/stats/prometheus?filter=cluster%5C.")
    found = {c: ClusterStats({}, []) for c in clusters}
    for line in text.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        metric, labels, value = match.groups()
        tags = dict(LABEL.findall(labels))
        stats = found.get(tags.get("envoy_cluster_name", ""))
        if stats is None:
            continue
        if metric == "envoy_cluster_upstream_rq_xx":
            cls = tags.get("envoy_response_code_class", "")
            stats.responses[cls] = stats.responses.get(cls, 0) + int(float(value))
        elif metric == "envoy_cluster_upstream_rq_time_bucket":
            stats.buckets.append((float(tags["le"].replace("+Inf", "inf")), int(float(value))))
    for stats in found.values():
        stats.buckets.sort()
    return found


# ------------------------------------------------------------------------------ the chart's

CHART_CONFIG_DIR = Path("/etc/mlcp-router/routes")  # the routes ConfigMap, mounted
CHART_PORTS = {"port": 8080, "stats_port": 8081, "admin_port": 9901}
CHART_BOOTSTRAP = Path(__file__).resolve().parents[2] / "charts/mlcp/files/router/bootstrap.json"


def chart_bootstrap() -> str:
    """The router pod's bootstrap (the chart mounts it from a ConfigMap): the same Envoy
    configuration as the local stack's, listening on every address of the pod but for the
    admin interface, which stays on the pod's loopback."""
    boot = bootstrap(CHART_CONFIG_DIR, host="0.0.0.0", **CHART_PORTS)
    return json.dumps(boot, indent=1) + "\n"


def main() -> int:
    """``python -m steps.registry.router``: write the chart's bootstrap file (``make yaml`` runs
    it);
    a test compares the committed file with :func:`chart_bootstrap`."""
    CHART_BOOTSTRAP.parent.mkdir(parents=True, exist_ok=True)
    CHART_BOOTSTRAP.write_text(chart_bootstrap())
    print(f"wrote {CHART_BOOTSTRAP}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
