"""The Kubernetes manifests and the container image, checked offline.

kustomize is not installed here, so ``render`` applies the subset of kustomize the manifests use (resources,
namespace, labels, images, strategic-merge patches) and every rendered object is validated against the
Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields fail). KEDA's objects are not in those
schemas; their shape is checked here. Then the cross-references: selectors, Services and ports, ConfigMap and
Secret keys, the env vars settings.py reads, queue names, probe URLs and management commands.
"""
from __future__ import annotations

import ast
import copy
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from .conftest import ROOT

K8S = ROOT / "k8s"
KUBERNETES_VERSION = "1.30"
GEDGE_IMAGE = re.compile(r"^registry\.[a-z.]+(:\d+)?/gedge-(cpu|gpu):[\w.]+$")
CLUSTER_SCOPED = {"Namespace"}


# --- a small kustomize ---


def load_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def merge(base, patch):
    """Strategic merge as kustomize applies it to these kinds: maps merge (null deletes), lists of named
    objects (containers, env, volumes, ports...) merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and patch and
            all(isinstance(item, dict) and "name" in item for item in base + patch)):
        out = [copy.deepcopy(item) for item in base]
        for item in patch:
            index = next((i for i, old in enumerate(out) if old["name"] == item["name"]), None)
            if index is None:
                out.append(copy.deepcopy(item))
            else:
                out[index] = merge(out[index], item)
        return out
    return copy.deepcopy(patch)


def key(doc: dict) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def render(directory: Path) -> list[dict]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        docs.extend(render(path) if path.is_dir() else load_docs(path))
    by_key = {key(doc): i for i, doc in enumerate(docs)}
    assert len(by_key) == len(docs), f"{directory}: two resources with one kind and name"
    for patch_ref in kustomization.get("patches", []):
        for patch in load_docs(directory / patch_ref["path"]):
            assert key(patch) in by_key, f"{patch_ref['path']} patches {key(patch)}, which is not a resource"
            index = by_key[key(patch)]
            assert docs[index]["apiVersion"] == patch["apiVersion"]
            docs[index] = None if patch.get("$patch") == "delete" else merge(docs[index], patch)
    docs = [doc for doc in docs if doc is not None]
    images = {image["name"]: image for image in kustomization.get("images", [])}
    for doc in docs:
        for container in containers(doc):
            name, _, tag = container["image"].rpartition(":")
            if not name or "/" in tag:  # no tag, or the colon was a registry's port
                name = container["image"]
            image = images.get(name)
            if image:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
        if kustomization.get("namespace") and doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = kustomization["namespace"]
        for labels in kustomization.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(labels["pairs"])
    return docs


def pod_spec(doc: dict) -> dict | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def containers(doc: dict) -> list[dict]:
    spec = pod_spec(doc)
    return [] if spec is None else spec.get("initContainers", []) + spec["containers"]


BASE = render(K8S / "base")
EDGE = render(K8S / "overlays" / "edge")
EXTRAS = [doc for path in sorted((K8S / "extras").glob("*.yaml")) for doc in load_docs(path)]
RENDERED = {"base": BASE, "edge": EDGE}


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [doc for doc in docs if key(doc) == (kind, name)]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def of_kind(docs, *kinds):
    return [doc for doc in docs if doc["kind"] in kinds]


def gedge_containers(docs):
    """(workload, container) for every container that runs our image."""
    return [(doc, c) for doc in docs for c in containers(doc) if GEDGE_IMAGE.match(c["image"])]


def config(docs) -> dict[str, str]:
    return find(docs, "ConfigMap", "gedge-config")["data"]


# The Secret the Pods read is created by the operator (docs/deploy.md, "Secrets"), never deployed by the base:
# its keys are those of the template in extras, which the cross-references below check against.
SECRET_TEMPLATE = K8S / "extras" / "secret.example.yaml"
SECRET_NAME = "gedge-secrets"


def secret_doc(docs, name: str = SECRET_NAME) -> dict:
    assert not of_kind(docs, "Secret"), "the base and overlays deploy no Secret (the operator creates it)"
    assert name == SECRET_NAME, f"a reference to Secret {name}, which no template describes"
    return find(load_docs(SECRET_TEMPLATE), "Secret", name)


def secret(docs) -> dict[str, str]:
    return secret_doc(docs)["stringData"]


# --- schemas ---


def test_every_base_file_is_in_the_kustomization():
    listed = set(yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"])
    assert {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"} == listed


@pytest.mark.parametrize("variant", ["base", "edge"])
def test_no_secret_is_deployed_and_the_template_s_values_are_refused(variant):
    from gedge_site.envconf import is_example_value

    assert not of_kind(RENDERED[variant], "Secret"), "the example Secret (known values) must never deploy"
    assert not any("secret" in entry for entry in yaml.safe_load(
        (K8S / ("base" if variant == "base" else "overlays/edge") / "kustomization.yaml").read_text())["resources"])
    # Every value of the template that is a credential carries the marker settings.py and ensure_admin refuse.
    values = yaml.safe_load(SECRET_TEMPLATE.read_text())["stringData"]
    credentials = {name: value for name, value in values.items() if name not in ("POSTGRES_USER", "POSTGRES_DB")}
    assert credentials and all(is_example_value(value) for value in credentials.values()), credentials


@pytest.mark.parametrize("variant", ["base", "edge", "extras"])
def test_kubernetes_objects_match_the_schemas(variant):
    docs = EXTRAS if variant == "extras" else RENDERED[variant]
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith(("keda.sh/", "traefik.io/")):  # CRDs: not in Kubernetes' schemas
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{variant} {key(doc)}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked >= (2 if variant == "extras" else 15)


def test_the_edge_overlay_changes_what_it_says():
    gpu = pod_spec(find(EDGE, "Deployment", "gpu-worker"))
    assert gpu["runtimeClassName"] == "nvidia" and gpu["nodeSelector"] == {"gedge.io/accelerator": "nvidia"}
    assert gpu["tolerations"] == pod_spec(find(BASE, "Deployment", "gpu-worker"))["tolerations"]
    assert find(EDGE, "PersistentVolumeClaim", "gedge-media")["spec"]["storageClassName"] == "nfs-client"
    assert find(EDGE, "ScaledObject", "gpu-worker")["spec"]["maxReplicaCount"] == 1
    cpu = find(EDGE, "Deployment", "cpu-worker")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in cpu["env"]}
    assert env["DRAMATIQ_NPROCS"] == "1" and env["PROMETHEUS_MULTIPROC_DIR"] == "/run/gedge/prometheus"
    assert cpu["command"] == find(BASE, "Deployment", "cpu-worker")["spec"]["template"]["spec"]["containers"][0][
        "command"]
    assert {c["image"] for _, c in gedge_containers(EDGE)} == {"registry.edge.local:5000/gedge-cpu:0.1.0",
                                                              "registry.edge.local:5000/gedge-gpu:0.1.0"}
    assert config(EDGE)["DJANGO_ALLOWED_HOSTS"] == "gedge.edge.local,localhost,web.gedge.svc.cluster.local"
    assert config(EDGE)["GEDGE_MODEL_PATH"] == config(BASE)["GEDGE_MODEL_PATH"]  # untouched keys stay


KEDA_SCALED_OBJECT_SPEC = {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval",
                           "cooldownPeriod", "idleReplicaCount", "fallback", "advanced", "triggers"}
KEDA_REDIS_METADATA = {"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "listName",
                       "listLength", "activationListLength", "databaseIndex", "enableTLS", "unsafeSsl",
                       "usernameFromEnv", "passwordFromEnv"}


@pytest.mark.parametrize("variant", ["base", "edge"])
def test_keda_objects_have_keda_s_shape(variant):
    docs = RENDERED[variant]
    auths = {doc["metadata"]["name"]: doc for doc in of_kind(docs, "TriggerAuthentication")}
    for auth in auths.values():
        assert auth["apiVersion"] == "keda.sh/v1alpha1" and set(auth["spec"]) == {"secretTargetRef"}
        for ref in auth["spec"]["secretTargetRef"]:
            assert set(ref) == {"parameter", "name", "key"} and ref["parameter"] in ("password", "username")
            assert ref["key"] in secret_doc(docs, ref["name"])["stringData"]
    scaled = of_kind(docs, "ScaledObject")
    assert {doc["metadata"]["name"] for doc in scaled} == {"cpu-worker", "gpu-worker"}
    for doc in scaled:
        spec = doc["spec"]
        assert doc["apiVersion"] == "keda.sh/v1alpha1" and set(spec) <= KEDA_SCALED_OBJECT_SPEC
        assert set(spec["scaleTargetRef"]) == {"name"}
        find(docs, "Deployment", spec["scaleTargetRef"]["name"])
        for field in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"):
            assert isinstance(spec[field], int) and spec[field] >= 0
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
        if behavior:  # KEDA hands this to the HPA it creates: validate it as an HPA's
            kubernetes_validate.validate({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 1,
                         "behavior": behavior}}, KUBERNETES_VERSION, strict=True)
        for trigger in spec["triggers"]:
            assert set(trigger) == {"type", "metadata", "authenticationRef"} and trigger["type"] == "redis"
            assert trigger["authenticationRef"]["name"] in auths
            metadata = trigger["metadata"]
            assert set(metadata) <= KEDA_REDIS_METADATA
            assert all(isinstance(value, str) for value in metadata.values()), "KEDA metadata values are strings"
            assert int(metadata["listLength"]) >= 1


# --- cross-references ---


@pytest.mark.parametrize("variant", ["base", "edge"])
def test_selectors_services_and_ports_line_up(variant):
    docs = RENDERED[variant]
    workloads = of_kind(docs, "Deployment", "StatefulSet")
    for doc in workloads:
        selector = doc["spec"]["selector"]["matchLabels"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"{key(doc)}: selector does not match its Pods"
        others = [o for o in workloads if o is not doc
                  and selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()]
        assert not others, f"{key(doc)}'s selector also matches {[key(o) for o in others]}"
    for service in of_kind(docs, "Service"):
        selected = [doc for doc in workloads
                    if service["spec"]["selector"].items() <= doc["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {len(selected)} workloads"
        ports = {p["name"] for c in containers(selected[0]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports
    for stateful in of_kind(docs, "StatefulSet"):
        find(docs, "Service", stateful["spec"]["serviceName"])
    pdb = find(docs, "PodDisruptionBudget", "web")
    web = find(docs, "Deployment", "web")
    assert pdb["spec"]["selector"]["matchLabels"] == web["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] < web["spec"]["replicas"], "a PDB the web can honour during a drain"
    # Reads scale by web replicas: an autoscaler owns the web's count, from what it starts with.
    hpa = find(docs, "HorizontalPodAutoscaler", "web")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    assert hpa["spec"]["minReplicas"] == web["spec"]["replicas"] < hpa["spec"]["maxReplicas"]
    assert all(c["resources"]["requests"]["cpu"] for c in containers(web)), "CPU utilisation needs a request"
    for rule in find(docs, "Ingress", "gedge")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            service = find(docs, "Service", backend["name"])
            assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
            assert path["path"] == "/", "one path for pages, API and /ws/ (WebSocket)"


@pytest.mark.parametrize("variant", ["base", "edge"])
def test_config_and_secret_references_exist(variant):
    docs = RENDERED[variant]
    claims = {doc["metadata"]["name"] for doc in of_kind(docs, "PersistentVolumeClaim")}
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        templates = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"] for v in spec.get("volumes", [])} | templates
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            if "secret" in volume:
                keys = secret_doc(docs, volume["secret"]["secretName"])["stringData"]
                assert {item["key"] for item in volume["secret"]["items"]} <= set(keys), key(doc)
        for container in containers(doc):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{key(doc)}: volume {mount['name']} missing"
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    find(docs, "ConfigMap", source["configMapRef"]["name"])
                if "secretRef" in source:
                    secret_doc(docs, source["secretRef"]["name"])
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["key"] in secret_doc(docs, ref["secretKeyRef"]["name"])[
                        "stringData"], f"{key(doc)}: {env['name']}"
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["key"] in find(docs, "ConfigMap", ref["configMapKeyRef"]["name"])[
                        "data"]
                assert "value" in env or "valueFrom" in env


def settings_env_vars() -> set[str]:
    """Every variable gedge_site/settings.py reads through the envconf helpers."""
    tree = ast.parse((ROOT / "gedge_site" / "settings.py").read_text())
    names = {node.args[0].value for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
             and node.func.id in {"env_str", "env_int", "env_float", "env_bool", "env_list"}
             and node.args and isinstance(node.args[0], ast.Constant)}
    assert {"DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY", "GEDGE_MODEL_PATH"} <= names
    return names


def container_env(docs, container) -> dict[str, str | None]:
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(secret_doc(docs, source["secretRef"]["name"])["stringData"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value")
    return env


# Fault injection for the fault-tolerance tests (jobs/workers/faults.py): never configured on a cluster.
TEST_ONLY_PREFIX = "GEDGE_FAULT_"


@pytest.mark.parametrize("variant", ["base", "edge"])
def test_every_setting_is_provided_to_every_gedge_container(variant):
    docs = RENDERED[variant]
    read = settings_env_vars()
    wanted = {name for name in read if not name.startswith(TEST_ONLY_PREFIX)}
    found = gedge_containers(docs)
    assert {doc["metadata"]["name"] for doc, _ in found} == {"web", "cpu-worker", "gpu-worker", "reaper",
                                                             "gedge-migrate"}
    for doc, container in found:
        env = container_env(docs, container)
        provided = {name.removesuffix("_FILE") if name.endswith("_FILE") else name for name in env}
        missing = wanted - provided
        assert not missing, f"{key(doc)} lacks {sorted(missing)}"
        assert not {name for name in provided if name.startswith(TEST_ONLY_PREFIX)}, "fault injection on a cluster"
    # What the settings read is all that is configured: no stale or misspelt key goes unnoticed.
    assert {name.removesuffix("_FILE") if name.endswith("_FILE") else name for name in config(docs)} <= wanted
    assert set(secret(docs)) - wanted <= {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "REDIS_PASSWORD",
                                          "GEDGE_ADMIN_PASSWORD"}


@pytest.mark.parametrize("variant", ["base", "edge"])
def test_bundled_databases_match_the_urls(variant):
    docs = RENDERED[variant]
    values = secret(docs)
    db = urlparse(values["DATABASE_URL"])
    assert (db.username, db.password, db.path.lstrip("/")) == (
        values["POSTGRES_USER"], values["POSTGRES_PASSWORD"], values["POSTGRES_DB"])
    assert db.hostname == find(docs, "Service", "postgres")["metadata"]["name"] and db.port == 5432
    for name in ("REDIS_URL", "CHANNELS_REDIS_URL", "CACHE_REDIS_URL"):
        redis_url = urlparse(values[name])
        assert redis_url.password == values["REDIS_PASSWORD"] and redis_url.hostname == "redis"
        assert redis_url.port == find(docs, "Service", "redis")["spec"]["ports"][0]["port"]
    namespace = find(docs, "Deployment", "web")["metadata"]["namespace"]
    redis_url = urlparse(values["REDIS_URL"])
    for scaled in of_kind(docs, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            # KEDA's operator runs in its own namespace: the address must be the Service's full name.
            assert trigger["metadata"]["address"] == f"redis.{namespace}.svc.cluster.local:{redis_url.port}"
            assert trigger["metadata"]["databaseIndex"] == redis_url.path.lstrip("/")


def manage_command(argv: list[str]) -> list[str] | None:
    if argv[:2] == ["python", "manage.py"]:
        return argv[2:]
    if argv[:2] == ["sh", "-c"] and "manage.py" in argv[2]:
        return manage_command(shlex.split(argv[2]))
    return None


def worker_queues(docs) -> dict[str, list[str]]:
    out = {}
    for doc, container in gedge_containers(docs):
        args = manage_command(container["command"])
        if args and args[0] == "rundramatiq":
            assert args[1] == "--queues", "a worker listens to named queues, never to all"
            out[doc["metadata"]["name"]] = args[2:]
    return out


@pytest.mark.parametrize("variant", ["base", "edge"])
def test_worker_queues_are_the_actors_queues_and_keda_watches_them(variant):
    from jobs.actors import ACTOR_BY_STAGE

    docs = RENDERED[variant]
    actor_queues = {actor.queue_name for actor in ACTOR_BY_STAGE.values()}
    queues = worker_queues(docs)
    assert queues == {"cpu-worker": ["preprocess", "postprocess"], "gpu-worker": ["inference"]}
    assert {q for qs in queues.values() for q in qs} == actor_queues
    namespace = config(docs)["GEDGE_DRAMATIQ_NAMESPACE"]
    for scaled in of_kind(docs, "ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]["name"]
        watched = [t["metadata"]["listName"] for t in scaled["spec"]["triggers"]]
        assert sorted(watched) == sorted(f"{namespace}:{q}" for q in queues[target]), target


@pytest.mark.parametrize("variant", ["base", "edge"])
def test_commands_and_probes_exist(variant):
    from django.core.management import get_commands
    from django.urls import resolve

    docs = RENDERED[variant]
    commands = get_commands()
    allowed_hosts = config(docs)["DJANGO_ALLOWED_HOSTS"].split(",")
    for doc, container in gedge_containers(docs):
        for argv in [container["command"]] + [container[p]["exec"]["command"] for p in
                                              ("startupProbe", "livenessProbe", "readinessProbe")
                                              if "exec" in container.get(p, {})]:
            args = manage_command(argv)
            if args is not None:
                assert args[0] in commands, f"{key(doc)}: no management command {args[0]}"
            else:
                assert argv[0] == "daphne" and argv[-1] == "gedge_site.asgi:application", argv
                assert (ROOT / "gedge_site" / "asgi.py").exists()
        for probe in ("livenessProbe", "readinessProbe"):
            if doc["kind"] != "Job":
                assert probe in container, f"{key(doc)} has no {probe}"
            http = container.get(probe, {}).get("httpGet")
            if http:
                resolve(http["path"])  # raises Resolver404 for a URL that does not exist
                assert http["port"] in {p["name"] for p in container["ports"]}
                host = {h["name"]: h["value"] for h in http.get("httpHeaders", [])}.get("Host")
                assert host in allowed_hosts, "Django answers 400 to a probe whose Host it does not allow"
    web = find(docs, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]
    assert resolve(web["readinessProbe"]["httpGet"]["path"]).url_name == "readyz"
    assert resolve(web["livenessProbe"]["httpGet"]["path"]).url_name == "healthz"
    for doc in of_kind(docs, "StatefulSet"):
        for container in containers(doc):
            assert "livenessProbe" in container and "readinessProbe" in container


@pytest.mark.parametrize("variant", ["base", "edge"])
def test_resources_security_and_shutdown(variant):
    docs = RENDERED[variant]
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        for container in containers(doc):
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{key(doc)} requests"
            assert {"cpu", "memory"} <= set(resources.get("limits", {})), f"{key(doc)} limits"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True, key(doc)
    for name in ("cpu-worker", "gpu-worker"):
        worker = find(docs, "Deployment", name)
        spec = worker["spec"]["template"]["spec"]
        env = container_env(docs, spec["containers"][0])
        # Dramatiq gives up on a worker's unacknowledged messages after its heartbeat: the grace period must
        # at least let a stage reach its next batch and hand the job back.
        assert spec["terminationGracePeriodSeconds"] >= 120
        assert env["PROMETHEUS_MULTIPROC_DIR"] == env["dramatiq_prom_db"], "one folder for all worker metrics"
        assert any(m["mountPath"] == env["GEDGE_WORKER_STATE_DIR"] for m in spec["containers"][0]["volumeMounts"])
        assert env["PROMETHEUS_MULTIPROC_DIR"].startswith(env["GEDGE_WORKER_STATE_DIR"] + "/")
        assert worker["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == env[
            "dramatiq_prom_port"]
    gpu = find(docs, "Deployment", "gpu-worker")
    spec = gpu["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    env = container_env(docs, container)
    assert env["dramatiq_queue_prefetch"] == "1" and env["DRAMATIQ_NTHREADS"] == "1"
    assert env["GEDGE_PROVIDERS"].split(",")[0] == "CUDAExecutionProvider"
    assert GEDGE_IMAGE.match(container["image"]).group(2) == "gpu"
    assert gpu["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, "a surge Pod would wait for a second GPU"
    for doc, c in gedge_containers(docs):
        if doc["metadata"]["name"] != "gpu-worker":
            assert GEDGE_IMAGE.match(c["image"]).group(2) == "cpu" and "nvidia.com/gpu" not in c["resources"]["limits"]


@pytest.mark.parametrize("variant", ["base", "edge"])
def test_media_volume_is_shared_read_write_many(variant):
    docs = RENDERED[variant]
    claim = find(docs, "PersistentVolumeClaim", "gedge-media")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    cfg = config(docs)
    for name in ("web", "cpu-worker", "gpu-worker", "reaper"):
        spec = find(docs, "Deployment", name)["spec"]["template"]["spec"]
        volume = next(v["name"] for v in spec["volumes"]
                      if v.get("persistentVolumeClaim", {}).get("claimName") == "gedge-media")
        mount = next(m["mountPath"] for m in spec["containers"][0]["volumeMounts"] if m["name"] == volume)
        for setting in ("GEDGE_MEDIA_ROOT", "GEDGE_MODEL_PATH"):
            assert cfg[setting].startswith(mount.rstrip("/") + "/"), f"{name}: {setting} is off the shared volume"


def test_hpa_fallback_targets_the_metrics_the_web_exports():
    from jobs.ops.metrics import ServiceCollector  # noqa: F401 - the exporter of gedge_queue_depth

    hpas = of_kind(EXTRAS, "HorizontalPodAutoscaler")
    queues = worker_queues(BASE)
    assert {h["metadata"]["name"] for h in hpas} == set(queues)
    metrics_py = (ROOT / "jobs" / "ops" / "metrics.py").read_text()
    for hpa in hpas:
        find(BASE, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
        watched = []
        for metric in hpa["spec"]["metrics"]:
            assert metric["external"]["metric"]["name"] == "gedge_queue_depth"
            assert '"gedge_queue_depth"' in metrics_py
            watched.append(metric["external"]["metric"]["selector"]["matchLabels"]["queue"])
        assert sorted(watched) == sorted(queues[hpa["metadata"]["name"]])


# --- the container image ---


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and global ARG defaults substituted."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
                    for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    first_from = next(i for i, (instruction, _) in enumerate(instructions) if instruction == "FROM")
    defaults = dict(args.split("=", 1) for instruction, args in instructions[:first_from]
                    if instruction == "ARG" and "=" in args)
    return [(instruction, re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), args)
             if instruction == "FROM" else args) for instruction, args in instructions]


def stages() -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    current = "(global)"  # ARGs before the first FROM
    for instruction, args in dockerfile_instructions():
        if instruction == "FROM":
            words = args.split()
            current = words[words.index("AS") + 1] if "AS" in words else words[0]
            out[current] = []
        out.setdefault(current, []).append((instruction, args))
    return out


def test_dockerfile_has_cpu_and_gpu_targets_that_run_as_a_user():
    found = stages()
    assert {"cpu", "gpu"} <= set(found)
    for target in ("cpu", "gpu"):
        instructions = found[target]
        users = [args for instruction, args in instructions if instruction == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), f"{target} runs as root"
        assert int(users[-1].split(":")[0]) == 10001, "the uid the manifests' securityContext names"
        # No compilers or package managers' caches in what ships: build tools live in the builder stages.
        runs = " ".join(args for instruction, args in instructions if instruction == "RUN")
        assert not re.search(r"\b(build-essential|gcc|g\+\+|make)\b", runs), target
        copies = [args for instruction, args in instructions if instruction == "COPY"]
        assert any("--from=" in c for c in copies), f"{target} copies its virtualenv from a builder stage"
    gpu_from = next(args for instruction, args in found["gpu"] if instruction == "FROM")
    assert "nvidia/cuda" in gpu_from and "cudnn" in gpu_from and "runtime" in gpu_from
    text = (ROOT / "Dockerfile").read_text()
    assert "onnxruntime-gpu" in text


def test_dockerfile_copies_files_that_exist_and_dockerignore_keeps_secrets_out():
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    for needed in (".git", ".venv", "var", "models", "**/__pycache__", ".env"):
        assert needed in ignore, f".dockerignore should exclude {needed}"
    checked = 0
    for instruction, args in dockerfile_instructions():
        if instruction != "COPY" or "--from=" in args:
            continue
        sources = [word for word in shlex.split(args) if not word.startswith("--")][:-1]
        for source in sources:
            matches = list(ROOT.glob(source))
            assert matches, f"COPY {source}: no such file in the project"
            for match in matches:
                assert match.name not in ignore, f"COPY {source}: excluded by .dockerignore"
            checked += 1
    assert checked >= 4


# --- hardening: Pods, secrets as files, NetworkPolicies, a static scan ---

SECRETS_DIR = "/etc/gedge/secrets"
# The settings that are secrets: never an environment variable on a cluster, always NAME_FILE.
SECRET_SETTINGS = {"DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CHANNELS_REDIS_URL", "CACHE_REDIS_URL"}
VARIANTS = ["base", "edge", "extras"]


def variant_docs(variant: str) -> list[dict]:
    return EXTRAS if variant == "extras" else RENDERED[variant]


def pod_specs(docs) -> list[tuple[dict, dict]]:
    return [(doc, pod_spec(doc)) for doc in docs if pod_spec(doc) is not None]


@pytest.mark.parametrize("variant", VARIANTS)
def test_pods_run_without_a_token_root_or_privileges(variant):
    specs = pod_specs(variant_docs(variant))
    assert len(specs) >= (1 if variant == "extras" else 7)
    for doc, spec in specs:
        assert spec.get("automountServiceAccountToken") is False, f"{key(doc)}: no service-account token"
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0 and pod["runAsGroup"] > 0, key(doc)
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, key(doc)
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec), key(doc)
        for container in containers(doc):
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False, key(doc)
            assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}, key(doc)
            assert not sc.get("privileged") and "add" not in sc["capabilities"], key(doc)
    for doc, _container in gedge_containers(variant_docs(variant)):
        # The uid the Dockerfile's USER names (test_dockerfile_has_cpu_and_gpu_targets_that_run_as_a_user).
        assert pod_spec(doc)["securityContext"]["runAsUser"] == 10001, key(doc)


@pytest.mark.parametrize("variant", VARIANTS)
def test_secrets_reach_containers_only_as_read_only_files(variant):
    docs = variant_docs(variant)
    template = set(load_docs(SECRET_TEMPLATE)[0]["stringData"])
    env_docs = BASE if variant == "extras" else docs  # the extras' Job loads the base's ConfigMap
    for doc, spec in pod_specs(docs):
        secret_volumes = {v["name"]: v["secret"] for v in spec.get("volumes", []) if "secret" in v}
        for container in containers(doc):
            assert not any("secretRef" in source for source in container.get("envFrom", [])), key(doc)
            assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in container.get("env", [])), key(doc)
            files: dict[str, str] = {}
            for mount in container.get("volumeMounts", []):
                volume = secret_volumes.get(mount["name"])
                if volume is None:
                    continue
                assert mount.get("readOnly") is True and mount["mountPath"] == SECRETS_DIR, key(doc)
                assert volume["secretName"] == SECRET_NAME and volume["defaultMode"] & 0o007 == 0, key(doc)
                for item in volume["items"]:  # only the keys this Pod needs, each a file named as its key
                    assert item["key"] in template and item["path"] == item["key"], key(doc)
                    files[f"{SECRETS_DIR}/{item['path']}"] = item["key"]
            env = container_env(env_docs, container)
            named = {name: value for name, value in env.items()
                     if name.endswith("_FILE") and (value or "").startswith(SECRETS_DIR + "/")}
            for name, value in named.items():
                assert files.get(value) == name.removesuffix("_FILE"), f"{key(doc)}: {name}={value} is not mounted"
            shell = " ".join(" ".join(container.get(field, [])) for field in ("command", "args"))
            assert "$(" + "REDIS_PASSWORD)" not in shell, "a password on a command line"
            if GEDGE_IMAGE.match(container["image"]):
                assert not SECRET_SETTINGS & set(env), f"{key(doc)}: a secret as an environment variable"
                assert {f"{name}_FILE" for name in SECRET_SETTINGS} <= set(named), key(doc)
    if variant != "extras":
        web = find(docs, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]
        assert container_env(docs, web)["GEDGE_ADMIN_PASSWORD_FILE"] == f"{SECRETS_DIR}/GEDGE_ADMIN_PASSWORD"
        postgres = find(docs, "StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0]
        assert {e["name"] for e in postgres["env"]} >= {"POSTGRES_USER_FILE", "POSTGRES_PASSWORD_FILE",
                                                         "POSTGRES_DB_FILE"}


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector ({} selects everything)."""
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, values = labels.get(expression["key"]), expression.get("values", [])
        if not {"In": value in values, "NotIn": value not in values, "Exists": value is not None,
                "DoesNotExist": value is None}[expression["operator"]]:
            return False
    return True


GEDGE_NS = "gedge"
OUTSIDE = (None, {})  # an address outside the cluster


def pod_labels(docs, kind: str, name: str) -> tuple[str, dict]:
    return GEDGE_NS, find(docs, kind, name)["spec"]["template"]["metadata"]["labels"]


def peer_matches(peer: dict, namespace: str | None, labels: dict) -> bool:
    if "ipBlock" in peer:
        return namespace is None
    if namespace is None:
        return False
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
    else:
        in_namespace = namespace == GEDGE_NS
    return in_namespace and selects(peer.get("podSelector", {}), labels)


def admitted(docs, direction: str, pod: dict, peer: tuple, port: int, protocol: str) -> bool:
    """Whether the NetworkPolicies selecting ``pod`` let it talk to ``peer`` in ``direction``."""
    policies = [p for p in of_kind(docs, "NetworkPolicy") if direction in p["spec"]["policyTypes"]
                and selects(p["spec"]["podSelector"], pod)]
    if not policies:
        return True  # a Pod no policy isolates
    rules, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    return any((not rule.get("ports") or any(p.get("protocol", "TCP") == protocol and p.get("port") == port
                                             for p in rule["ports"]))
               and (not rule.get(peers) or any(peer_matches(x, *peer) for x in rule[peers]))
               for policy in policies for rule in policy["spec"].get(rules, []))


def connects(docs, source: tuple, target: tuple, port: int, protocol: str = "TCP") -> bool:
    """Egress of the source (where it is in the namespace) and ingress of the target (likewise) both allow."""
    if source[0] == GEDGE_NS and not admitted(docs, "Egress", source[1], target, port, protocol):
        return False
    return target[0] != GEDGE_NS or admitted(docs, "Ingress", target[1], source, port, protocol)


@pytest.mark.parametrize("variant", ["base", "edge"])
def test_network_policies_deny_by_default_and_allow_what_g_edge_needs(variant):
    docs = RENDERED[variant]
    pods = {key(doc): pod_labels(docs, *key(doc)) for doc in docs if pod_spec(doc) is not None}
    deny = find(docs, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, "every Pod isolated both ways"
    postgres, redis = pods[("StatefulSet", "postgres")], pods[("StatefulSet", "redis")]
    web = pods[("Deployment", "web")]
    dns = ("kube-system", {"k8s-app": "kube-dns"})
    apps = [pods[("Deployment", n)] for n in ("web", "cpu-worker", "gpu-worker", "reaper")] + [
        pods[("Job", "gedge-migrate")]]
    for app in apps:
        assert connects(docs, app, postgres, 5432) and connects(docs, app, redis, 6379), app
        assert not connects(docs, app, OUTSIDE, 443), f"{app}: egress to the internet"
        assert not connects(docs, app, web, 8000), f"{app} reaches the web"
    for pod in pods.values():
        assert connects(docs, pod, dns, 53, "UDP") and connects(docs, pod, dns, 53, "TCP"), pod
    ingress = (("kube-system", {"app.kubernetes.io/name": "traefik"}) if variant == "edge"
               else ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}))
    assert connects(docs, ingress, web, 8000)
    keda = ("keda", {"app": "keda-operator"})
    assert connects(docs, keda, redis, 6379) and not connects(docs, keda, postgres, 5432)
    monitoring = ("monitoring", {"app.kubernetes.io/name": "prometheus"})
    assert connects(docs, monitoring, web, 8000)
    for worker in ("cpu-worker", "gpu-worker"):
        assert connects(docs, monitoring, pods[("Deployment", worker)], 9191)
    # And nothing else: another namespace, the outside, the databases between themselves.
    stranger = ("default", {"app": "anything"})
    for target, port in ((web, 8000), (postgres, 5432), (redis, 6379), (pods[("Deployment", "cpu-worker")], 9191)):
        assert not connects(docs, stranger, target, port) and not connects(docs, OUTSIDE, target, port)
    assert not connects(docs, ingress, postgres, 5432) and not connects(docs, ingress, redis, 6379)
    assert not connects(docs, redis, postgres, 5432) and not connects(docs, postgres, redis, 6379)
    assert not connects(docs, pods[("Deployment", "cpu-worker")], web, 8000)
    if variant == "edge":  # the base's ingress-nginx namespace is not what k3s runs
        assert not connects(docs, ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}), web, 8000)


def test_the_model_download_job_alone_reaches_the_internet():
    docs = BASE + of_kind(EXTRAS, "NetworkPolicy")
    fetch = (GEDGE_NS, find(EXTRAS, "Job", "gedge-fetch-model")["spec"]["template"]["metadata"]["labels"])
    assert connects(docs, fetch, OUTSIDE, 443) and not connects(docs, fetch, OUTSIDE, 80)
    assert not connects(docs, pod_labels(BASE, "Deployment", "web"), OUTSIDE, 443)


# checkov (its own virtualenv, requirements/scan.in) over what `kubectl apply -k` would apply. Skipped checks,
# for every resource (a resource's own skips are annotations beside it, each with its reason):
CHECKOV = ROOT / ".venv-scan" / "bin" / "checkov"
CHECKOV_SKIPS = {
    # Tags, not digests: an overlay sets the release's tag (or a digest: `kustomize edit set image
    # gedge-cpu=registry/gedge-cpu@sha256:...`); the base cannot know a digest before the image is built.
    "CKV_K8S_43": "image by digest",
    # Release tags are never rebuilt, and Always would keep Pods from restarting whenever an edge site loses
    # its registry; IfNotPresent (the default for a tag) is the right policy here.
    "CKV_K8S_15": "imagePullPolicy Always",
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_static_security_scan_finds_nothing(variant, tmp_path):
    import json
    import subprocess

    assert CHECKOV.exists(), "checkov is missing: `make scan-venv` (make test installs it) from requirements/scan.txt"
    rendered = tmp_path / f"{variant}.yaml"
    rendered.write_text(yaml.safe_dump_all(variant_docs(variant), sort_keys=False))
    result = subprocess.run([str(CHECKOV), "--file", str(rendered), "--framework", "kubernetes", "--quiet",
                             "--compact", "--skip-download", "--output", "json",
                             "--skip-check", ",".join(CHECKOV_SKIPS)],
                            capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin",
                                                                              "HOME": str(tmp_path)})
    assert result.stdout.strip(), result.stderr[-2000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [(check["check_id"], check["resource"]) for r in reports for check in r["results"]["failed_checks"]]
    assert not failed, failed
    passed = sum(r["summary"]["passed"] for r in reports)
    assert passed >= (50 if variant == "extras" else 500), f"checkov ran only {passed} checks"
    skipped = {(check["check_id"], check["resource"]) for r in reports
               for check in r["results"].get("skipped_checks", [])}
    # The resource's own skips (annotations) are only the two official images' users.
    assert {c for c, _ in skipped} - set(CHECKOV_SKIPS) <= {"CKV_K8S_40"}, skipped


def nginx_body_limit(ingress: dict) -> int:
    value = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    return int(value.removesuffix("m")) * 1024 * 1024


@pytest.mark.parametrize("variant", ["base", "edge"])
def test_request_bodies_are_small_at_the_edge_but_a_signed_in_classic_upload(variant):
    """What jobs/web/body_limit.py does inside the web, the ingress does in front of it (Daphne receives a body
    whole before the application can refuse it): GEDGE_MAX_BODY_BYTES everywhere, GEDGE_MAX_UPLOAD_BYTES on the
    classic upload's two URLs after the web's /api/auth/check/ said the client is signed in."""
    docs = RENDERED[variant]
    cfg = config(docs)
    body, upload = int(cfg["GEDGE_MAX_BODY_BYTES"]), int(cfg["GEDGE_MAX_UPLOAD_BYTES"])
    assert "web.gedge.svc.cluster.local" in cfg["DJANGO_ALLOWED_HOSTS"].split(","), "the auth check's Host"
    if variant == "base":
        assert nginx_body_limit(find(docs, "Ingress", "gedge")) == body
        large = find(docs, "Ingress", "gedge-upload")
        assert upload < nginx_body_limit(large) <= upload + 2 * 1024 * 1024
        notes = large["metadata"]["annotations"]
        assert notes["nginx.ingress.kubernetes.io/auth-url"] == "http://web.gedge.svc.cluster.local/api/auth/check/"
        assert "$http_authorization" in notes["nginx.ingress.kubernetes.io/auth-cache-key"]
        paths = {(p["path"], p["pathType"]) for rule in large["spec"]["rules"] for p in rule["http"]["paths"]}
        assert paths == {("/api/jobs/", "Exact"), ("/upload/", "Exact")}
        return
    assert not [doc for doc in of_kind(docs, "Ingress") if doc["metadata"]["name"] == "gedge-upload"]
    small = find(docs, "Middleware", "small-bodies")["spec"]["buffering"]["maxRequestBodyBytes"]
    assert small == body
    notes = find(docs, "Ingress", "gedge")["metadata"]["annotations"]
    assert notes["traefik.ingress.kubernetes.io/router.middlewares"] == "gedge-small-bodies@kubernetescrd"
    route = find(docs, "IngressRoute", "gedge-upload")["spec"]["routes"][0]
    assert "Method(`POST`)" in route["match"] and "Path(`/api/jobs/`)" in route["match"]
    assert [m["name"] for m in route["middlewares"]] == ["upload-auth", "upload-body"]  # signed in, then the body
    auth = find(docs, "Middleware", "upload-auth")["spec"]["forwardAuth"]
    assert auth["address"] == "http://web.gedge.svc.cluster.local/api/auth/check/"
    assert set(auth["authRequestHeaders"]) == {"Cookie", "Authorization"}
    assert upload < find(docs, "Middleware", "upload-body")["spec"]["buffering"]["maxRequestBodyBytes"]
