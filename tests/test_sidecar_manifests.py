"""Container and Kubernetes files in sidecar/: valid offline, and in agreement with the config."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import runpy
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import gunicorn.config
import kubernetes_validate
import pytest
import yaml
from _fluentbit import METADATA, Pipeline, expand, load_classic, load_yaml

from conftest import ROOT

SIDECAR = ROOT / "sidecar"
K8S = SIDECAR / "k8s"
# Native sidecars (init containers with restartPolicy: Always) are GA from 1.33.
KUBERNETES_VERSION = "1.33.0"
# The version the sidecar tests run (tests/test_sidecar_fluentbit.py, .ci/run).
FLUENT_BIT_IMAGE = "fluent/fluent-bit:5.1.1"
CONFIG_FILES = ("fluent-bit.yaml", "fluent-bit.conf", "parsers.conf")
CLASSIC = ROOT / "fluent-bit.conf"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _manifests() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in _documents(path):
            found[document["kind"]] = document
    return found


@pytest.fixture(name="pod")
def _pod() -> dict[str, Any]:
    spec: dict[str, Any] = _manifests()["Deployment"]["spec"]["template"]["spec"]
    return spec


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    for container in pod.get("initContainers", []) + pod["containers"]:
        if container["name"] == name:
            return container
    raise LookupError(name)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _mount(container: dict[str, Any], volume: str) -> str:
    (path,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
    return str(path)


def _config_for(command: list[str]) -> Pipeline:
    """The top-level config file that a `fluent-bit -c /fluent-bit/etc/NAME` command runs."""
    name = PurePosixPath(command[command.index("-c") + 1]).name
    return load_yaml(ROOT / name) if name.endswith(".yaml") else load_classic(ROOT / name)


def _check_paths_agree(
    pipeline: Pipeline, flb_env: dict[str, str], flb_mount: str, app_sink: str, app_mount: str
) -> None:
    tail = pipeline.plugin("inputs", "tail")
    path = PurePosixPath(expand(tail.get("path") or "", flb_env))
    assert str(path.parent) == flb_mount, "Fluent Bit tails the directory where the volume is"
    assert flb_mount == app_mount, "both containers mount the volume at the same path"
    assert fnmatch.fnmatch(app_sink, str(path)), "the tail glob matches the app's sink"
    assert str(PurePosixPath(app_sink).parent) == app_mount
    db = PurePosixPath(expand(tail.get("db") or "", flb_env))
    storage = PurePosixPath(expand(pipeline.service.get("storage.path") or "", flb_env))
    assert db.parent == PurePosixPath(flb_mount), "offsets DB on the volume"
    assert storage.parent == PurePosixPath(flb_mount), "buffer on the volume"
    assert not fnmatch.fnmatch(str(db), str(path)), "the tail must not read its own DB"


# Kubernetes.


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_manifests_validate_against_kubernetes_schemas(path: Path) -> None:
    for document in _documents(path):
        if document.get("kind") == "Kustomization":
            continue
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = _documents(K8S / "kustomization.yaml")
    others = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == others


def test_configmap_is_identical_to_the_top_level_files() -> None:
    data = _manifests()["ConfigMap"]["data"]
    assert set(data) == set(CONFIG_FILES)
    for name in CONFIG_FILES:
        assert data[name] == (ROOT / name).read_text(encoding="utf-8"), (
            f"{name} differs from sidecar/k8s/configmap.yaml: run python sidecar/sync_configmap.py"
        )
    spec = importlib.util.spec_from_file_location("sync_configmap", SIDECAR / "sync_configmap.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0


def test_fluent_bit_is_a_native_sidecar_running_the_configmap(pod: dict[str, Any]) -> None:
    (sidecar,) = pod["initContainers"]
    assert sidecar["name"] == "fluent-bit"
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == FLUENT_BIT_IMAGE
    command = sidecar["command"] + sidecar["args"]
    config_path = PurePosixPath(command[command.index("-c") + 1])
    assert str(config_path.parent) == _mount(sidecar, "fluent-bit-config")
    (volume,) = [v for v in pod["volumes"] if v["name"] == "fluent-bit-config"]
    assert volume["configMap"]["name"] == _manifests()["ConfigMap"]["metadata"]["name"]
    assert config_path.name in _manifests()["ConfigMap"]["data"]


def test_paths_agree_in_the_pod(pod: dict[str, Any]) -> None:
    sidecar, app = _container(pod, "fluent-bit"), _container(pod, "app")
    (logs,) = [v for v in pod["volumes"] if v["name"] == "logs"]
    assert logs["emptyDir"]["sizeLimit"] == "1Gi"
    # The log files' disk budget (sidecar/gunicorn.conf.py's default: three files' worth) and
    # the buffer of two enabled outputs fit the volume.
    forward = load_yaml(ROOT / "fluent-bit.yaml").plugin("outputs", "forward")
    limit = expand(forward.get("storage.total_limit_size") or "", {})
    assert limit.endswith("M")
    storage_limit = int(limit[:-1]) * 1024**2
    rotate = int(_env(app)["LOG_ROTATE_BYTES"])
    budget = int(_env(app).get("LOG_DISK_BUDGET_BYTES", 3 * rotate))
    assert budget + 2 * storage_limit < 1024**3
    # The file the sidecar runs, and the other form that a switch of format would run.
    for pipeline in (_config_for(sidecar["command"] + sidecar["args"]), load_classic(CLASSIC)):
        _check_paths_agree(
            pipeline,
            _env(sidecar),
            _mount(sidecar, "logs"),
            _env(app)["ASYNCLOG_SINK"],
            _mount(app, "logs"),
        )


def test_listeners_in_the_pod(pod: dict[str, Any]) -> None:
    sidecar, app = _container(pod, "fluent-bit"), _container(pod, "app")
    pipeline = _config_for(sidecar["command"] + sidecar["args"])
    otlp_port = expand(pipeline.plugin("inputs", "opentelemetry").get("port") or "", {})
    # The app exports to the sidecar over the pod's loopback.
    assert _env(app)["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://127.0.0.1:{otlp_port}"
    # The listeners moved off loopback are the health server (the kubelet probes from the
    # node) and the metrics exporter (Prometheus scrapes from its pod), to the pod IP, not
    # 0.0.0.0; nothing else in the sidecar is overridden.
    overrides = {e["name"]: e for e in sidecar["env"]}
    for name in ("FLB_HTTP_LISTEN", "FLB_METRICS_LISTEN"):
        assert overrides[name]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert not {"FLB_OTLP_PORT", "FLB_HTTP_PORT", "FLB_METRICS_PORT"} & set(overrides)
    health_port = int(expand(pipeline.service.get("http_port") or "", {}))
    exporter = pipeline.plugin("outputs", "prometheus_exporter")
    metrics_port = int(expand(exporter.get("port") or "", {}))
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports == {"flb-http": health_port, "metrics": metrics_port}
    for probe in ("startupProbe", "livenessProbe"):
        assert sidecar[probe]["httpGet"]["path"] == "/api/v1/health"
        assert sidecar[probe]["httpGet"]["port"] == "flb-http"
    # A readiness probe on the sidecar would take the pod out of the Service when the log
    # backend is slow.
    assert "readinessProbe" not in sidecar


def test_prometheus_scrapes_the_sidecar_and_never_the_app(pod: dict[str, Any]) -> None:
    template = _manifests()["Deployment"]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    metrics_port = {p["name"]: p["containerPort"] for p in _container(pod, "fluent-bit")["ports"]}
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(metrics_port["metrics"]),
        "prometheus.io/path": "/metrics",
    }
    # The app declares only its HTTP port, and the Service exposes only that.
    assert [p["name"] for p in _container(pod, "app")["ports"]] == ["http"]
    service = _manifests()["Service"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_app_container_is_probed_limited_and_locked_down(pod: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    for container in pod["initContainers"] + pod["containers"]:
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}, container["name"]
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["runAsNonRoot"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
    app = _container(pod, "app")
    for probe in ("readinessProbe", "livenessProbe"):
        assert app[probe]["httpGet"]["path"] == "/health"
        assert app[probe]["httpGet"]["port"] == "http"
    # Workers keep heartbeat files in /dev/shm; anything else that writes gets /tmp.
    assert _mount(app, "tmp") == "/tmp"


# Measured by `make bench` (sidecar/README.md, "What one sidecar carries"): one sidecar CPU
# keeps up with this many asynclog workers at full load, the metrics on, with the costliest
# output (opentelemetry; rounded down from 1.05). A worker at full load uses one CPU.
WORKERS_PER_SIDECAR_CPU = 1.0


def _cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_sidecar_cpu_keeps_up_with_the_app(pod: dict[str, Any]) -> None:
    app, sidecar = _container(pod, "app"), _container(pod, "fluent-bit")
    for kind in ("requests", "limits"):
        # The app's CPU is at most that many workers at full load; the sidecar ships their
        # lines with a fifth to spare.
        needed = _cpu(app["resources"][kind]["cpu"]) / WORKERS_PER_SIDECAR_CPU
        assert _cpu(sidecar["resources"][kind]["cpu"]) >= 1.2 * needed, kind


def test_service_selects_the_pods_and_targets_the_app() -> None:
    manifests = _manifests()
    deployment, service = manifests["Deployment"], manifests["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    app_ports = {
        p["name"] for p in _container(deployment["spec"]["template"]["spec"], "app")["ports"]
    }
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= app_ports


def test_grace_period_covers_app_drain_and_fluent_bit_grace(pod: dict[str, Any]) -> None:
    settings = runpy.run_path(str(SIDECAR / "gunicorn.conf.py"))
    grace = int(load_yaml(ROOT / "fluent-bit.yaml").service.get("grace") or 0)
    app = _container(pod, "app")
    pre_stop = int(app["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + settings["graceful_timeout"] + grace


def test_ingress_fronts_the_service_with_tls_and_nginx_conf_timeouts() -> None:
    manifests = _manifests()
    ingress, service = manifests["Ingress"], manifests["Service"]
    settings = runpy.run_path(str(SIDECAR / "gunicorn.conf.py"))
    [rule] = ingress["spec"]["rules"]
    [path] = rule["http"]["paths"]
    backend = path["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert rule["host"] in ingress["spec"]["tls"][0]["hosts"]
    annotations = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    # Idle upstream connections are dropped by the proxy before gunicorn drops them.
    assert int(annotations[prefix + "upstream-keepalive-timeout"]) < settings["keepalive"]
    assert int(annotations[prefix + "proxy-read-timeout"]) > settings["graceful_timeout"]
    assert "error" in annotations[prefix + "proxy-next-upstream"]
    # The app believes the controller's forwarded headers, and only those of the pod network.
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert _env(_container(pod, "app"))["FORWARDED_ALLOW_IPS"] not in ("", "*")


def test_hpa_scales_the_deployment_on_cpu_and_pdb_keeps_pods_serving() -> None:
    manifests = _manifests()
    deployment, hpa, pdb = (
        manifests["Deployment"], manifests["HorizontalPodAutoscaler"],
        manifests["PodDisruptionBudget"],
    )  # fmt: skip
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # CPU utilisation is measured against the requests: every container must declare one.
    pod = deployment["spec"]["template"]["spec"]
    for container in pod.get("initContainers", []) + pod["containers"]:
        assert container["resources"]["requests"]["cpu"], container["name"]
    # The HPA owns the replica count; a `replicas` here would reset it on every apply.
    assert "replicas" not in deployment["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


# docker compose.


@pytest.fixture(name="compose")
def _compose() -> dict[str, Any]:
    (document,) = _documents(SIDECAR / "docker-compose.yml")
    return document


def test_compose_has_the_app_and_its_sidecar(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"app", "fluent-bit"}
    assert services["fluent-bit"]["image"] == FLUENT_BIT_IMAGE
    assert services["app"]["build"]["dockerfile"] == "sidecar/Dockerfile"
    # Like a pod: one network namespace, so OTLP to 127.0.0.1:4318 reaches the sidecar.
    assert services["fluent-bit"]["network_mode"] == "service:app"
    assert services["app"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == (
        "http://127.0.0.1:4318"
    )
    for service in services.values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port
        assert str(service["user"]).split(":")[0] not in ("0", "root")
        assert service["read_only"] is True
    # The app service owns the network namespace, so it publishes the sidecar's /metrics,
    # which Fluent Bit serves on every address of that namespace.
    assert "127.0.0.1:2021:2021" in services["app"]["ports"]
    assert services["fluent-bit"]["environment"]["FLB_METRICS_LISTEN"] == "0.0.0.0"


def test_compose_paths_agree(compose: dict[str, Any]) -> None:
    services = compose["services"]
    app, flb = services["app"], services["fluent-bit"]

    def volume_mount(service: dict[str, Any], volume: str) -> str:
        (target,) = [v.split(":")[1] for v in service["volumes"] if v.split(":")[0] == volume]
        return str(target)

    assert "logs" in compose["volumes"]
    command = flb["entrypoint"] + flb["command"]
    for pipeline in (_config_for(command), load_classic(CLASSIC)):
        _check_paths_agree(
            pipeline,
            {k: str(v) for k, v in flb["environment"].items()},
            volume_mount(flb, "logs"),
            app["environment"]["ASYNCLOG_SINK"],
            volume_mount(app, "logs"),
        )
    # The config files come from the repository, read-only, where `-c` looks for them.
    mounted = {}
    for entry in flb["volumes"]:
        source, target, *mode = entry.split(":")
        if source.startswith("."):
            assert mode == ["ro"]
            mounted[target] = (SIDECAR / source).resolve()
    assert sorted(p.name for p in mounted.values()) == sorted(CONFIG_FILES)
    for target, source in mounted.items():
        assert PurePosixPath(target).name == source.name
    assert command[command.index("-c") + 1] in mounted


# The image and the gunicorn config it runs.


def test_dockerfile_runs_gunicorn_as_non_root() -> None:
    text = (SIDECAR / "Dockerfile").read_text(encoding="utf-8")
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert re.fullmatch(r"FROM python:3\.\d+-slim", instructions[0])
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    uid = int(users[-1].split(":")[0])
    pod_spec = _manifests()["Deployment"]["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsUser"] == uid
    assert not any("--reload" in line for line in instructions)
    cmd = next(line for line in instructions if line.startswith("CMD "))
    assert '"gunicorn", "--config", "gunicorn.conf.py", "example.app:app"' in cmd
    assert "COPY sidecar/gunicorn.conf.py ./gunicorn.conf.py" in text
    assert 'python -c "import asynclog._speedups"' in text, "the image has the C fast path"
    ignore = (SIDECAR / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "**", "the build context is an allowlist: .venv and .git stay out"


def test_gunicorn_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GUNICORN_BIND", "GUNICORN_WORKERS", "GUNICORN_TIMEOUT", "GUNICORN_KEEPALIVE",
                 "FORWARDED_ALLOW_IPS"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    settings = runpy.run_path(str(SIDECAR / "gunicorn.conf.py"))
    assert settings["workers"] == 4
    assert settings["worker_class"] == "uvicorn_worker.UvicornWorker"
    assert settings["max_requests"] == 1000
    assert settings["max_requests_jitter"] == 50
    assert settings["reload"] is False
    assert settings["bind"] == "127.0.0.1:8000"
    assert 0 < settings["keepalive"] < settings["timeout"]
    assert settings["graceful_timeout"] >= 10
    known = {setting.name for setting in gunicorn.config.KNOWN_SETTINGS}
    public = {
        k
        for k, v in settings.items()
        if not k.startswith("_") and not callable(v) and not isinstance(v, ModuleType)
    }
    public.discard("annotations")  # from __future__ import annotations
    # A misspelt setting is silently ignored by gunicorn, so check every name.
    assert public <= known, public - known
    hooks = {k for k, v in settings.items() if callable(v) and not k.startswith("_")}
    assert {"on_starting", "when_ready", "on_exit", "worker_exit", "post_worker_init"} <= hooks
    assert hooks <= known
    # Only loopback's forwarded headers are believed unless FORWARDED_ALLOW_IPS says more.
    assert settings["forwarded_allow_ips"] == "127.0.0.1,::1"


def test_gunicorn_config_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUNICORN_BIND", "0.0.0.0:9000")
    monkeypatch.setenv("GUNICORN_WORKERS", "3")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.244.0.0/16")
    settings = runpy.run_path(str(SIDECAR / "gunicorn.conf.py"))
    assert (settings["bind"], settings["workers"]) == ("0.0.0.0:9000", 3)
    assert settings["forwarded_allow_ips"] == "10.244.0.0/16"


# The aggregator tier (sidecar/fluent-bit-aggregator.yaml, sidecar/k8s/aggregator/).

AGGREGATOR_K8S = K8S / "aggregator"
AGGREGATOR_CONFIG = SIDECAR / "fluent-bit-aggregator.yaml"


def _aggregator_manifests() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(AGGREGATOR_K8S.glob("*.yaml")):
        for document in _documents(path):
            found[document["kind"]] = document
    return found


@pytest.mark.parametrize("path", sorted(AGGREGATOR_K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_aggregator_manifests_validate_against_kubernetes_schemas(path: Path) -> None:
    for document in _documents(path):
        if document.get("kind") == "Kustomization":
            continue
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_aggregator_kustomization_lists_every_manifest() -> None:
    (kustomization,) = _documents(AGGREGATOR_K8S / "kustomization.yaml")
    others = {p.name for p in AGGREGATOR_K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == others


# The sidecar's opentelemetry output sets the Resource from its environment (the pod's); at
# the aggregator that environment is the aggregator's own, and Fluent Bit 5.1.1 can set a
# Resource only per group of records, from literal values (a chunk there mixes pods). Its last
# processors differ: the deployment stays in each LogRecord's attributes instead.
_SIDECAR_RESOURCE = [
    {"name": "modify", "remove": ["time", *METADATA]},
    {"name": "opentelemetry_envelope"},
    *(
        {
            "name": "content_modifier",
            "context": "otel_resource_attributes",
            "action": "upsert",
            "key": key,
            "value": value,
        }
        for key, value in (
            ("service.name", "${OTEL_SERVICE_NAME:-asynclog-example}"),
            ("k8s.pod.name", "${POD_NAME:-unknown}"),
            ("k8s.namespace.name", "${POD_NAMESPACE:-unknown}"),
            ("k8s.node.name", "${NODE_NAME:-unknown}"),
        )
    ),
]
_AGGREGATOR_ATTRIBUTES = [{"name": "modify", "remove": ["time"]}]


def test_aggregator_ships_with_the_sidecars_outputs_and_variables() -> None:
    """Forward in, a filesystem buffer, and each network output of the sidecar, chosen by the
    same FLB_<OUTPUT>_MATCH variable with the same settings and processors. Only the buffer's
    default size differs (the aggregator holds every pod's backlog), and the opentelemetry
    output's Resource (see above). Loki's labels come from each record's deployment fields,
    so the same definition gives each pod's values at the aggregator."""
    sidecar, aggregator = load_yaml(ROOT / "fluent-bit.yaml"), load_yaml(AGGREGATOR_CONFIG)
    (forward,) = aggregator.inputs
    assert forward.name == "forward"
    assert forward.get("storage.type") == "filesystem"
    assert expand(forward.get("listen") or "", {}) == "127.0.0.1"
    assert aggregator.service.get("storage.path")
    outputs = {o.name: o for o in aggregator.outputs}
    assert set(outputs) == {"stdout", "es", "loki", "opentelemetry"}
    for name, output in outputs.items():
        theirs = sidecar.plugin("outputs", name)
        mine = [(k, v) for k, v in output.entries if k != "storage.total_limit_size"]
        assert mine == [(k, v) for k, v in theirs.entries if k != "storage.total_limit_size"]
        mine_processors, their_processors = output.processors, theirs.processors
        if name == "opentelemetry":
            logs = their_processors["logs"]
            assert logs[-len(_SIDECAR_RESOURCE) :] == _SIDECAR_RESOURCE
            tail = len(_AGGREGATOR_ATTRIBUTES)
            assert mine_processors["logs"][-tail:] == _AGGREGATOR_ATTRIBUTES
            mine_processors = {"logs": mine_processors["logs"][:-tail]}
            their_processors = {"logs": logs[: -len(_SIDECAR_RESOURCE)]}
        assert mine_processors == their_processors, name
    assert sidecar.plugin("outputs", "loki").processors, "the labels' copies"
    # What the sidecar's forward output reaches by default is this Service and port.
    out_forward = sidecar.plugin("outputs", "forward")
    assert out_forward.get("require_ack_response") == "true"
    service = _aggregator_manifests()["Service"]
    assert expand(out_forward.get("host") or "", {}) == service["metadata"]["name"]
    (port,) = service["spec"]["ports"]
    assert str(port["port"]) == expand(out_forward.get("port") or "", {})
    assert str(port["port"]) == expand(forward.get("port") or "", {})


def test_aggregator_deployment_runs_its_configmap_on_a_buffer_volume() -> None:
    manifests = _aggregator_manifests()
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == FLUENT_BIT_IMAGE
    command = container["command"] + container["args"]
    config_path = PurePosixPath(command[command.index("-c") + 1])
    assert str(config_path.parent) == _mount(container, "config")
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == manifests["ConfigMap"]["metadata"]["name"]
    assert manifests["ConfigMap"]["data"] == {
        config_path.name: AGGREGATOR_CONFIG.read_text(encoding="utf-8")
    }
    pipeline = load_yaml(AGGREGATOR_CONFIG)
    storage = PurePosixPath(expand(pipeline.service.get("storage.path") or "", _env(container)))
    assert storage.parent == PurePosixPath(_mount(container, "buffer"))
    # The sidecars connect from other pods, the kubelet probes from the node: the pod IP.
    overrides = {e["name"]: e for e in container["env"]}
    for name in ("FLB_FORWARD_LISTEN", "FLB_HTTP_LISTEN"):
        assert overrides[name]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (forward,) = pipeline.inputs
    assert ports["forward"] == int(expand(forward.get("port") or "", {}))
    assert ports["flb-http"] == int(expand(pipeline.service.get("http_port") or "", {}))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/api/v1/health", "port": "flb-http"}
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    grace = int(pipeline.service.get("grace") or 0)
    assert pod["terminationGracePeriodSeconds"] > grace
    service = manifests["Service"]
    labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["forward"]


def test_gunicorn_rotation_budget_below_two_files_fails_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ASYNCLOG_SINK", str(tmp_path / "app.log"))
    monkeypatch.setenv("LOG_ROTATE_BYTES", "1000")
    monkeypatch.setenv("LOG_DISK_BUDGET_BYTES", "1999")
    settings = runpy.run_path(str(SIDECAR / "gunicorn.conf.py"))
    with pytest.raises(ValueError, match="LOG_DISK_BUDGET_BYTES"):
        settings["when_ready"](None)
