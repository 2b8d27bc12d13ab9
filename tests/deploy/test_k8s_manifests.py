"""deploy/k8s: every manifest valid against the Kubernetes API schema (kubernetes-validate,
strict: unknown fields fail), and the references between them consistent: what a
`kubectl apply -k` would accept and what would then actually run."""

from __future__ import annotations

import re

import pytest
import yaml

from gateway.config.loader import parse_config
from gateway.settings import Settings
from tests.deploy.artifacts import DEPLOY

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"


def _documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


DOCS = _documents()


def _one(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in DOCS if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _gateway() -> tuple[dict, dict]:
    deployment = _one("Deployment", "gateway")
    return deployment, deployment["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


@pytest.mark.parametrize("source, doc", DOCS, ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in DOCS])
def test_manifest_is_valid_against_the_kubernetes_schema(source, doc):
    import kubernetes_validate

    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    assert kustomization["namespace"] == _one("Namespace")["metadata"]["name"]


def test_deployment_runs_several_probed_replicas_and_is_autoscaled():
    deployment, container = _gateway()
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # Ready once it can serve (its key store answered); alive while it answers at all.
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        http = container[probe]["httpGet"]
        assert http["path"] == path and http["port"] in ports
    assert str(ports["http"]) == _env(container)["GATEWAY_PORT"]
    hpa = _one("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "gateway")
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert "cpu" in container["resources"]["requests"]  # CPU utilisation needs a request
    pdb = _one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_prometheus_scrape_annotations_point_at_the_metrics_port():
    deployment, container = _gateway()
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) in {p["containerPort"] for p in container["ports"]}


def test_services_select_pods_that_exist_on_named_ports():
    workloads = [d for _, d in DOCS if d["kind"] in ("Deployment", "StatefulSet")]
    for service in (d for _, d in DOCS if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        matches = [w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert matches, f"Service {service['metadata']['name']} selects no pods"
        names = {p["name"] for w in matches for c in w["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names


def test_policy_comes_from_a_configmap_directory_mount_so_hot_reload_sees_updates():
    deployment, container = _gateway()
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    config_path = _env(container)["GATEWAY_CONFIG"]
    mount = next(m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"].rstrip("/") + "/"))
    assert "subPath" not in mount, "subPath mounts never see ConfigMap updates"
    configmap = _one("ConfigMap", volumes[mount["name"]]["configMap"]["name"])
    key = config_path[len(mount["mountPath"].rstrip("/")) + 1 :]
    config, _ = parse_config(configmap["data"][key], f"configmap:{key}")  # raises if invalid
    assert config.routes


def test_secrets_and_redis_the_deployment_needs_are_defined():
    deployment, container = _gateway()
    secret = _one("Secret", container["envFrom"][0]["secretRef"]["name"])
    assert "GATEWAY_API_KEYS" in secret["stringData"]
    redis_host = re.match(r"redis://([^:/]+)", _env(container)["GATEWAY_REDIS_URL"]).group(1)
    redis_service = _one("Service", redis_host)
    redis = _one("StatefulSet", "redis")
    assert redis_service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    assert "--appendonly" in redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert redis["spec"]["volumeClaimTemplates"], "Redis keeps its data on a persistent volume"


def test_writable_paths_are_volumes_under_a_read_only_root_and_shutdown_fits_the_grace_period():
    deployment, container = _gateway()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    env = _env(container)
    mounts = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    for path in (env["GATEWAY_DATA_DIR"], env["PROMETHEUS_MULTIPROC_DIR"]):
        assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), path
    # SIGKILL comes terminationGracePeriodSeconds after the preStop hook starts: after the
    # hook, the drain and the usage flush that follows it, with a margin for the writer to exit.
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    flush = env.get("GATEWAY_USAGE_SHUTDOWN_FLUSH_S") or Settings.model_fields["usage_shutdown_flush_s"].default
    assert grace >= pre_stop + float(env["GATEWAY_SHUTDOWN_GRACE_S"]) + float(flush) + 5


def _mebibytes(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", quantity).groups()
    return float(number) * units[unit]


# What a gateway pod with GATEWAY_WORKERS=2 holds idle (the supervisor, two workers and the
# usage writer process; measured RSS 320 MB, PSS 238 MB), before any request's buffers.
IDLE_RSS_MB = 320


def test_memory_request_covers_the_idle_pod_and_its_memory_backed_tmp():
    """The scheduler places pods by their request: one below what the pod holds idle lands
    it on a node that cannot hold it under load. A memory-backed emptyDir counts as the
    container's memory."""
    deployment, container = _gateway()
    assert _env(container)["GATEWAY_WORKERS"] == "2"
    resources = container["resources"]
    request, limit = _mebibytes(resources["requests"]["memory"]), _mebibytes(resources["limits"]["memory"])
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    in_memory = sum(_mebibytes(v["emptyDir"]["sizeLimit"]) for v in volumes if v.get("emptyDir", {}).get("medium"))
    assert request >= IDLE_RSS_MB * 1e6 / 2**20 + in_memory + 64  # and some room for calls in flight
    assert limit > request
