"""The chart: `helm lint` and `helm template` over several value sets, every rendered manifest
validated against Kubernetes' schemas (kubernetes-validate, offline), and the commands the chart
runs checked against the real command line: the init container's `containerd-config` writes
hosts.toml files into a temp dir and the uninstall hook's removes them.

helm comes from scripts/install-helm.sh (.tools/bin/helm); see reference/helm.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from distributed_images import cli, settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm"
HELM = ROOT / ".tools" / "bin" / "helm"
KUBERNETES_VERSIONS = ("1.29", "1.33")
NODE_IP = "127.0.0.1"
CRDS = {"ServiceMonitor", "Certificate"}  # kinds outside Kubernetes' own schemas

pytestmark = pytest.mark.integration

Manifest = dict[str, Any]

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "host-ports": {
        "node": {"hostNetwork": False},
        "networkPolicy": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}},
    },
    "everything": {
        "image": {"repository": "registry.example/di", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "pull"}],
        "clusterSecret": {"existingSecret": "tracker-secret", "secretKey": "s"},
        "tracker": {
            "nodeSelector": {"role": "infra"},
            "extraArgs": ["--fanout=3"],
            "seeders": ["worker-1", "worker-2"],
            "tls": {"enabled": True, "existingSecret": "tracker-tls", "caConfigMap": "cluster-ca"},
        },
        "node": {
            "registries": ["docker.io", "registry.internal:5000=http://10.0.0.9:5000"],
            "cacheMaxBytes": "50GiB",
            "uploadLimit": "100MB",
            "downloadLimit": "200MB",
            "zone": "eu-1a",
            "authSecret": "upstream-creds",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "extraEnv": [{"name": "DI_UPSTREAM_TIMEOUT", "value": "60"}],
        },
        "containerd": {"mirror": "http://127.0.0.1:8080", "dialTimeout": "500ms"},
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
            "grafanaDashboard": {"enabled": True, "namespace": "monitoring"},
        },
        "networkPolicy": {
            "enabled": True,
            "trackerFrom": [{"ipBlock": {"cidr": "10.0.0.0/16"}}],
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        },
    },
    "tls-by-cert-manager": {
        "tracker": {
            "tls": {
                "enabled": True,
                "certManager": {"issuerRef": {"name": "cluster-ca", "kind": "ClusterIssuer"}},
                "caConfigMap": "cluster-ca",
            }
        },
    },
    "bundled-redis": {
        "redis": {"enabled": True},
        "networkPolicy": {"enabled": True, "trackerFrom": [{"ipBlock": {"cidr": "10.0.0.0/16"}}]},
    },
    "external-store": {
        "tracker": {
            "replicas": 2,
            "store": {
                "existingSecret": "tracker-store",
                "key": "redis-url",
                "tlsCaSecret": "store-ca",
            },
        },
    },
    "standalone": {
        "tracker": {"enabled": False},
        "containerd": {"configure": False},
        "node": {"imagesDir": ""},
    },
}


@pytest.fixture(scope="module")
def helm(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., subprocess.CompletedProcess[str]]:
    if not HELM.exists():
        message = f"{HELM} is missing: run scripts/install-helm.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    home = tmp_path_factory.mktemp("helm-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBE"))}
    for name in ("CACHE", "CONFIG", "DATA"):
        env[f"HELM_{name}_HOME"] = str(home / name.lower())
    env["KUBECONFIG"] = str(home / "no-cluster")  # helm template must never reach a cluster

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(HELM), *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    return run


def values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def render(helm: Callable[..., Any], tmp_path: Path, values: dict[str, Any]) -> list[Manifest]:
    out = helm(
        "template", "di", str(CHART), "--namespace", "images", "-f", values_file(tmp_path, values)
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def find(manifests: list[Manifest], kind: str, suffix: str = "") -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{len(found)} {kind} named *{suffix}"
    return found[0]


def kinds(manifests: list[Manifest]) -> list[str]:
    return sorted(f"{m['kind']}/{m['metadata']['name']}" for m in manifests)


def container(pod_spec: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    containers = pod_spec["initContainers" if init else "containers"]
    [found] = [c for c in containers if c["name"] == name]
    return dict(found)


def env_of(c: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet would expand it, on a host at NODE_IP."""
    env: dict[str, str] = {}
    for item in c.get("env", []):
        value = item.get("value", "secret-or-field")
        env[item["name"]] = NODE_IP if item["name"] == "NODE_IP" else expand(value, env)
    return env


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], text)


def load_config(command: str, args: list[str], environ: dict[str, str]) -> Any:
    """Parse a container's args exactly as `distributed-images` would."""
    parser, modules = cli.build_parser()
    assert command in modules, f"no `distributed-images {command}`"
    namespace: argparse.Namespace = parser.parse_args(args)
    assert namespace.command == command
    return settings.load(modules[command].Config, namespace, environ)


# --- lint, render, validate ------------------------------------------------------------------


def test_helm_lint_passes_strictly(
    helm: Callable[..., Any], value_set: str, tmp_path: Path
) -> None:
    result = helm(
        "lint", "--strict", str(CHART), "-f", values_file(tmp_path, VALUE_SETS[value_set])
    )
    assert "0 chart(s) failed" in result.stdout


def test_rendered_manifests_are_valid_kubernetes_objects(
    helm: Callable[..., Any], value_set: str, tmp_path: Path
) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    manifests = render(helm, tmp_path, VALUE_SETS[value_set])
    assert manifests
    for manifest in manifests:
        if manifest["kind"] in CRDS:
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                name = f"{manifest['kind']}/{manifest['metadata']['name']}"
                pytest.fail(f"{value_set}: {name} invalid for {version}: {e.message} at {e.path}")


def test_the_validator_rejects_a_broken_manifest() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    broken = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"}, "spec": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_a_network_policy_that_would_cut_host_network_nodes_off_is_refused(
    helm: Callable[..., Any], tmp_path: Path
) -> None:
    values = {"networkPolicy": {"enabled": True}}
    result = helm("template", "di", str(CHART), "-f", values_file(tmp_path, values), check=False)
    assert result.returncode != 0
    assert "networkPolicy.trackerFrom" in result.stderr


# --- what the default install does -----------------------------------------------------------


@pytest.fixture(scope="module")
def defaults(helm: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    return render(helm, tmp_path_factory.mktemp("defaults"), {})


def test_the_default_install_is_a_tracker_a_node_daemonset_a_secret_and_the_uninstall_hook(
    defaults: list[Manifest],
) -> None:
    assert kinds(defaults) == [
        "DaemonSet/di-distributed-images-cleanup",
        "DaemonSet/di-distributed-images-node",
        "Deployment/di-distributed-images-tracker",
        "Pod/di-distributed-images-cleanup-wait",
        "Secret/di-distributed-images-cluster-secret",
        "Service/di-distributed-images-cleanup",
        "Service/di-distributed-images-node",
        "Service/di-distributed-images-tracker",
    ]
    service = find(defaults, "Service", "-tracker")
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {
        ("grpc", 7070),
        ("metrics", 7071),
    }


def test_the_node_daemonset_is_a_node_critical_host_service(defaults: list[Manifest]) -> None:
    spec = find(defaults, "DaemonSet", "-node")["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    node = container(spec, "node")
    # The registry API is on the host's loopback: only the metrics and peer ports are the host's.
    assert {(p["name"], p["containerPort"], p["hostPort"]) for p in node["ports"]} == {
        ("metrics", 8081, 8081),
        ("peer", 6881, 6881),
    }
    assert node["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert node["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert node["resources"]["requests"].keys() == {"cpu", "memory"}
    assert node["securityContext"]["runAsNonRoot"] is True
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert host_paths == {
        "data": "/var/lib/distributed-images/data",
        "images": "/var/lib/distributed-images/images",
        "credential": "/etc/distributed-images",
        "containerd-hosts": "/etc/containerd/certs.d",
        "containerd-config": "/etc/containerd",
    }


def test_the_node_container_args_mean_what_the_chart_says(defaults: list[Manifest]) -> None:
    node = container(find(defaults, "DaemonSet", "-node")["spec"]["template"]["spec"], "node")
    env = env_of(node)
    config = load_config("node", [expand(a, env) for a in node["args"]], env)
    assert config.listen == "127.0.0.1:8080"
    assert config.metrics_listen == "0.0.0.0:8081"
    assert config.cluster.peer_listen == "0.0.0.0:6881"
    assert config.cluster.advertise_host == NODE_IP
    assert config.cluster.tracker == "di-distributed-images-tracker.images.svc.cluster.local:7070"
    assert str(config.store.data_dir) == "/var/lib/distributed-images"
    assert str(config.images_dir) == "/app/images"
    # `kubectl exec <pod> -- distributed-images doctor` finds everything in the environment.
    doctor = load_config("doctor", ["doctor"], env)
    assert doctor.node == "http://127.0.0.1:8080"
    assert str(doctor.containerd_config) == "/host/containerd/config.toml"
    assert str(doctor.hosts_dir) == "/etc/containerd/certs.d"
    assert doctor.tracker == config.cluster.tracker


def test_the_tracker_args_mean_what_the_chart_says(defaults: list[Manifest]) -> None:
    deployment = find(defaults, "Deployment", "-tracker")
    tracker = container(deployment["spec"]["template"]["spec"], "tracker")
    config = load_config("tracker", tracker["args"], env_of(tracker))
    assert config.listen == "0.0.0.0:7070"
    assert config.http_listen == "0.0.0.0:7071"
    # The cluster secret is a file from its Secret, which only the tracker mounts.
    assert str(config.secret_file) == "/etc/distributed-images/secret/secret"
    assert config.tls_cert is None and config.seeder == []
    spec = deployment["spec"]["template"]["spec"]
    [volume] = [v for v in spec["volumes"] if v["name"] == "cluster-secret"]
    assert volume["secret"]["secretName"] == "di-distributed-images-cluster-secret"
    assert not any("secret" in str(e).lower() for e in tracker.get("env", []))


def test_no_node_pod_mounts_the_cluster_secret_or_the_trackers_key(
    helm: Callable[..., Any], tmp_path: Path
) -> None:
    for name in ("defaults", "everything", "tls-by-cert-manager"):
        manifests = render(helm, tmp_path, VALUE_SETS[name])
        spec = find(manifests, "DaemonSet", "-node")["spec"]["template"]["spec"]
        secrets = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        assert secrets <= {"upstream-creds"}, name
        assert "secretKeyRef" not in json.dumps(spec), name


def test_the_node_proves_its_identity_with_its_hosts_credential(defaults: list[Manifest]) -> None:
    spec = find(defaults, "DaemonSet", "-node")["spec"]["template"]["spec"]
    node = container(spec, "node")
    env = env_of(node)
    config = load_config("node", [expand(a, env) for a in node["args"]], env)
    assert config.cluster.node_id == "secret-or-field"  # spec.nodeName, as env_of stands it in
    assert str(config.cluster.credential_file) == "/etc/distributed-images/credential/credential"
    [volume] = [v for v in spec["volumes"] if v["name"] == "credential"]
    assert volume["hostPath"]["path"] == "/etc/distributed-images"


def test_tls_to_the_tracker_from_a_secret_or_cert_manager(
    helm: Callable[..., Any], tmp_path: Path
) -> None:
    for name, tls_secret in (("everything", "tracker-tls"), ("tls-by-cert-manager", None)):
        manifests = render(helm, tmp_path, VALUE_SETS[name])
        tracker = find(manifests, "Deployment", "-tracker")["spec"]["template"]["spec"]
        config = load_config("tracker", container(tracker, "tracker")["args"], {})
        assert str(config.tls_cert) == "/etc/distributed-images/tls/tls.crt"
        [volume] = [v for v in tracker["volumes"] if v["name"] == "tls"]
        secret_name = volume["secret"]["secretName"]
        if tls_secret is None:
            certificate = find(manifests, "Certificate", "-tracker")
            assert certificate["spec"]["secretName"] == secret_name
            assert "di-distributed-images-tracker.images.svc" in certificate["spec"]["dnsNames"]
        else:
            assert secret_name == tls_secret
        node = container(find(manifests, "DaemonSet", "-node")["spec"]["template"]["spec"], "node")
        env = env_of(node)
        node_config = load_config("node", [expand(a, env) for a in node["args"]], env)
        assert (
            str(node_config.cluster.tracker_tls_ca) == "/etc/distributed-images/tracker-ca/ca.crt"
        )


def test_tls_without_a_ca_for_the_nodes_is_refused(
    helm: Callable[..., Any], tmp_path: Path
) -> None:
    values = {"tracker": {"tls": {"enabled": True, "existingSecret": "t"}}}
    result = helm("template", "di", str(CHART), "-f", values_file(tmp_path, values), check=False)
    assert result.returncode != 0 and "caConfigMap" in result.stderr


def test_a_single_tracker_keeps_its_state_in_memory_and_is_ready_when_it_serves(
    defaults: list[Manifest],
) -> None:
    deployment = find(defaults, "Deployment", "-tracker")
    assert deployment["spec"]["replicas"] == 1
    tracker = container(deployment["spec"]["template"]["spec"], "tracker")
    assert tracker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert not load_config("tracker", tracker["args"], env_of(tracker)).storage.shared
    assert not [m for m in defaults if m["kind"] in ("PodDisruptionBudget", "StatefulSet")]


@pytest.fixture(scope="module")
def bundled(helm: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    return render(helm, tmp_path_factory.mktemp("bundled"), VALUE_SETS["bundled-redis"])


def test_with_the_bundled_redis_three_spread_replicas_share_it(bundled: list[Manifest]) -> None:
    deployment = find(bundled, "Deployment", "-tracker")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    keys = {c["topologyKey"] for c in spec["template"]["spec"]["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    pdb = find(bundled, "PodDisruptionBudget", "-tracker")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == spec["selector"]
    tracker = container(spec["template"]["spec"], "tracker")
    [store] = [e for e in tracker["env"] if e["name"] == "DI_STORE"]
    assert store["valueFrom"]["secretKeyRef"] == {
        "name": "di-distributed-images-redis",
        "key": "url",
    }
    env = env_of(tracker) | {"DI_STORE": "redis://:pw@redis:6379/0"}
    config = load_config("tracker", [expand(a, env) for a in tracker["args"]], env)
    assert config.storage.shared and config.advertise == "secret-or-field:7070"
    # The nodes know every ready replica through the headless Service.
    headless = find(bundled, "Service", "-tracker-headless")
    assert headless["spec"]["clusterIP"] == "None"
    node = container(find(bundled, "DaemonSet", "-node")["spec"]["template"]["spec"], "node")
    assert env_of(node)["DI_TRACKER"] == (
        "di-distributed-images-tracker-headless.images.svc.cluster.local:7070"
    )


def test_the_bundled_redis_keeps_its_password_off_every_command_line(
    bundled: list[Manifest],
) -> None:
    secret = find(bundled, "Secret", "-redis")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    password = data["password"]
    assert len(password) >= 32
    assert f"requirepass {password}" in data["redis.conf"]
    assert data["url"] == (
        f"redis://:{password}@di-distributed-images-redis.images.svc.cluster.local:6379/0"
    )
    statefulset = find(bundled, "StatefulSet", "-redis")
    redis = container(statefulset["spec"]["template"]["spec"], "redis")
    assert redis["command"] == ["valkey-server", "/etc/redis/redis.conf"]
    rendered = yaml.safe_dump([m for m in bundled if m["kind"] != "Secret"])
    assert password not in rendered
    assert find(bundled, "NetworkPolicy", "-redis")["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": statefulset_selector(bundled, "tracker")}}
    ]


def statefulset_selector(manifests: list[Manifest], component: str) -> dict[str, str]:
    deployment = find(manifests, "Deployment", f"-{component}")
    return dict(deployment["spec"]["selector"]["matchLabels"])


def test_an_external_store_is_read_from_its_secret_with_its_ca(
    helm: Callable[..., Any], tmp_path: Path
) -> None:
    manifests = render(helm, tmp_path, VALUE_SETS["external-store"])
    assert not [m for m in manifests if m["kind"] == "StatefulSet"]
    spec = find(manifests, "Deployment", "-tracker")["spec"]
    assert spec["replicas"] == 2
    tracker = container(spec["template"]["spec"], "tracker")
    [store] = [e for e in tracker["env"] if e["name"] == "DI_STORE"]
    assert store["valueFrom"]["secretKeyRef"] == {"name": "tracker-store", "key": "redis-url"}
    env = env_of(tracker) | {"DI_STORE": "rediss://redis.example:6380/1"}
    config = load_config("tracker", tracker["args"], env)
    assert str(config.storage.store_tls_ca) == "/etc/distributed-images/store-ca/ca.crt"
    [mount] = [m for m in tracker["volumeMounts"] if m["name"] == "store-ca"]
    assert mount["mountPath"] == "/etc/distributed-images/store-ca"


def test_replicas_without_a_store_are_refused(helm: Callable[..., Any], tmp_path: Path) -> None:
    values = {"tracker": {"replicas": 2}}
    result = helm("template", "di", str(CHART), "-f", values_file(tmp_path, values), check=False)
    assert result.returncode != 0
    assert "needs a shared store" in result.stderr


def test_init_container_writes_hosts_toml_and_the_uninstall_hook_restores_the_originals(
    defaults: list[Manifest], tmp_path: Path
) -> None:
    hosts_dir = tmp_path / "certs.d"
    original = hosts_dir / "docker.io" / "hosts.toml"
    original.parent.mkdir(parents=True)
    original.write_text('server = "https://registry-1.docker.io"\n')
    before = {p: p.read_bytes() for p in hosts_dir.rglob("*") if p.is_file()}

    init = container(
        find(defaults, "DaemonSet", "-node")["spec"]["template"]["spec"],
        "containerd-config",
        init=True,
    )
    assert cli.main(host_args(init, hosts_dir)) == 0
    for ns in ("docker.io", "ghcr.io", "quay.io", "registry.k8s.io"):
        hosts = tomllib.loads((hosts_dir / ns / "hosts.toml").read_text())
        assert hosts["host"][f"http://{NODE_IP}:8080"] == {
            "capabilities": ["pull", "resolve"],
            "dial_timeout": "200ms",
        }
    assert tomllib.loads(original.read_text())["server"] == "https://registry-1.docker.io"

    hook = find(defaults, "DaemonSet", "-cleanup")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "post-delete"
    remove = container(hook["spec"]["template"]["spec"], "containerd-config-remove", init=True)
    assert cli.main(host_args(remove, hosts_dir)) == 0
    assert {p: p.read_bytes() for p in hosts_dir.rglob("*") if p.is_file()} == before


def host_args(c: dict[str, Any], hosts_dir: Path) -> list[str]:
    """A container's args with the host's certs.d moved to `hosts_dir` (never the real one)."""
    env = env_of(c)
    args = [expand(a, env) for a in c["args"]]
    args = [f"--hosts-dir={hosts_dir}" if a.startswith("--hosts-dir=") else a for a in args]
    assert not any("/etc/" in a for a in args), args
    return args


def test_the_uninstall_hook_waits_until_every_host_is_restored(defaults: list[Manifest]) -> None:
    pod = find(defaults, "Pod", "-cleanup-wait")
    assert pod["metadata"]["annotations"]["helm.sh/hook-weight"] == "1"
    command = container(pod["spec"], "wait")["command"]
    assert command[:2] == ["python", "-c"]
    assert command[2] == (CHART / "files" / "cleanup-wait.py").read_text()
    service = find(defaults, "Service", "-cleanup")
    assert command[3] == f"{service['metadata']['name']}.images.svc.cluster.local"
    assert service["spec"]["publishNotReadyAddresses"] is True


@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


def test_the_wait_script_ends_when_every_address_listens(listener: int) -> None:
    script = CHART / "files" / "cleanup-wait.py"
    args = [sys.executable, str(script), "127.0.0.1", str(listener)]
    assert subprocess.run([*args, "10", "0"], capture_output=True, timeout=30).returncode == 0
    closed = [sys.executable, str(script), "127.0.0.1", "1", "1", "0"]  # nothing on port 1
    assert subprocess.run(closed, capture_output=True, timeout=30).returncode == 1


# --- the other value sets --------------------------------------------------------------------


def test_host_ports_mode_publishes_both_ports_and_guards_them_with_a_policy(
    helm: Callable[..., Any], tmp_path: Path
) -> None:
    manifests = render(helm, tmp_path, VALUE_SETS["host-ports"])
    spec = find(manifests, "DaemonSet", "-node")["spec"]["template"]["spec"]
    assert "hostNetwork" not in spec
    ports = {p["hostPort"] for p in container(spec, "node")["ports"]}
    assert ports == {8080, 6881}
    assert "--listen=0.0.0.0:8080" in container(spec, "node")["args"]
    init = container(spec, "containerd-config", init=True)
    assert "--mirror=http://$(NODE_IP):8080" in init["args"]
    policy = find(manifests, "NetworkPolicy", "-node")
    assert {p["port"] for p in policy["spec"]["ingress"][0]["ports"]} == {"registry", "peer"}


def test_everything_enabled_renders_monitoring_policies_and_node_settings(
    helm: Callable[..., Any], tmp_path: Path
) -> None:
    manifests = render(helm, tmp_path, VALUE_SETS["everything"])
    assert not [m for m in manifests if m["kind"] == "Secret"]  # existingSecret is used
    monitor = find(manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    for suffix in ("-node", "-tracker"):  # the monitor's selector finds both Services
        service = find(manifests, "Service", suffix)
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        assert "metrics" in [p["name"] for p in service["spec"]["ports"]]
    dashboard = find(manifests, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    panels = json.loads(dashboard["data"]["distributed-images.json"])["panels"]
    queries = " ".join(t["expr"] for p in panels for t in p["targets"])
    metrics = ("blob_bytes_total", "peer_bytes_total", "upstream_bytes_total", "tracker_nodes")
    for metric in (*metrics, "fallbacks_total", "chunk_duration_seconds_bucket"):
        assert f"distributed_images_{metric}" in queries
    tracker_policy = find(manifests, "NetworkPolicy", "-tracker")
    assert {"ipBlock": {"cidr": "10.0.0.0/16"}} in tracker_policy["spec"]["ingress"][0]["from"]

    spec = find(manifests, "DaemonSet", "-node")["spec"]["template"]["spec"]
    node = container(spec, "node")
    env = env_of(node)
    config = load_config("node", [expand(a, env) for a in node["args"]], env)
    assert config.store.cache_max_bytes == 50 * 2**30
    assert config.cluster.upload_limit == 100 * 10**6
    assert config.cluster.zone == "eu-1a"
    assert config.upstream.registry == ["registry.internal:5000=http://10.0.0.9:5000"]
    assert config.upstream.auth_file == "/etc/distributed-images/auth/config.json"
    assert config.upstream.upstream_timeout == 60.0
    assert node["image"] == "registry.example/di:1.2.3"
    init = container(spec, "containerd-config", init=True)
    assert "--mirror=http://127.0.0.1:8080" in init["args"]
    assert "--registry=registry.internal:5000=http://10.0.0.9:5000" in init["args"]


def test_standalone_nodes_run_without_a_tracker_or_containerd_changes(
    helm: Callable[..., Any], tmp_path: Path
) -> None:
    manifests = render(helm, tmp_path, VALUE_SETS["standalone"])
    assert kinds(manifests) == [
        "DaemonSet/di-distributed-images-node",
        "Service/di-distributed-images-node",
    ]
    spec = find(manifests, "DaemonSet", "-node")["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["prepare-cache"]
    node = container(spec, "node")
    assert not any(e["name"] == "DI_TRACKER" for e in node["env"])
    assert not any(a.startswith("--credential-file") for a in node["args"])
    assert not any(a.startswith("--images-dir") for a in node["args"])


# --- values.yaml -----------------------------------------------------------------------------


def test_every_key_of_values_yaml_is_documented() -> None:
    undocumented = []
    previous = ""
    list_indent: int | None = None  # keys inside list items are data, not settings
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if list_indent is not None and indent > list_indent:
            previous = stripped
            continue
        list_indent = indent if stripped.startswith("- ") else None
        match = re.match(r"([\w.-]+):", stripped)
        if match and not stripped.startswith("- ") and not previous.startswith("#"):
            undocumented.append(match.group(1))
        previous = stripped
    assert undocumented == []


def test_values_yaml_has_no_key_the_templates_ignore() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    templates = " ".join(p.read_text() for p in (CHART / "templates").iterdir())

    def paths(tree: dict[str, Any], prefix: str) -> Iterator[str]:
        for key, value in tree.items():
            path = f"{prefix}.{key}"
            # A map the templates pass on whole (toYaml) counts as used by its parent's name.
            if (
                isinstance(value, dict)
                and value
                and f"{path} " not in templates
                and f"{path} |" not in templates
            ):
                yield from paths(value, path)
            else:
                yield path

    unused = [p for p in paths(values, ".Values") if p not in templates]
    assert unused == []


def test_helm_is_the_pinned_one(helm: Callable[..., Any]) -> None:
    version = helm("version", "--template", "{{.Version}}").stdout.strip()
    assert version == re.search(r'HELM_VERSION="(v[\d.]+)"', install_script()).group(1)  # type: ignore[union-attr]


def install_script() -> str:
    return (ROOT / "scripts" / "install-helm.sh").read_text()


def test_install_script_is_quick_when_helm_is_there(helm: Callable[..., Any]) -> None:
    bash = shutil.which("bash")
    assert bash
    result = subprocess.run(
        [bash, str(ROOT / "scripts" / "install-helm.sh")],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # nothing downloaded, nothing installed
