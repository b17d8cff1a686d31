"""k8s/: every manifest validates offline, and the pieces refer to each other correctly.

RayService: the KubeRay CRD's openAPIV3Schema with unknown fields rejected (see
manifests.strict_crd_schema). Core kinds: kubernetes-validate's strict schemas, on the oldest
and newest Kubernetes it ships that KubeRay supports. The Secret and ConfigMap that kustomize
generates are built here from their sources and validated too.
"""

from __future__ import annotations

import copy
import re
import subprocess

import jsonschema
import kubernetes_validate
import pytest

from tests.deploy.manifests import (
    K8S_DIR, RAYSERVICE_CRD, containers, generated_resources, k8s_resources, kustomization,
    pod_specs, rayservice, serve_config, strict_crd_schema,
)

K8S_VERSIONS = ["1.28", "1.37"]
RESOURCES = k8s_resources()
CORE = [(f, d) for f, d in RESOURCES if d["kind"] != "RayService"] + [
    ("<generated>", d) for d in generated_resources()]


def _id(item) -> str:
    file, doc = item
    return f"{file}:{doc['kind']}/{doc['metadata']['name']}"


@pytest.fixture(scope="module")
def crd_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(strict_crd_schema(RAYSERVICE_CRD, "v1"))


def _walk(node):
    """Every dict nested anywhere in a manifest."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


# ---------------------------------------------------------------- kustomize

def test_kustomization_lists_every_manifest():
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization()["resources"]) == on_disk


def test_generator_sources_exist():
    kust = kustomization()
    for gen in kust["secretGenerator"]:
        for env_file in gen["envs"]:
            # The real file is the user's (git-ignored); the example must be committed.
            assert (K8S_DIR / f"{env_file}.example").is_file(), env_file
    for gen in kust["configMapGenerator"]:
        assert all((K8S_DIR / f).is_file() for f in gen["files"])
    # The RayService refers to the Secret by its plain name, which kustomize cannot rewrite.
    assert kust["generatorOptions"]["disableNameSuffixHash"] is True


# ---------------------------------------------------------------- RayService vs the CRD

def test_rayservice_validates_against_crd(crd_validator):
    errors = sorted(crd_validator.iter_errors(rayservice()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_rayservice_metadata_is_valid_object_meta():
    # The CRD leaves top-level metadata open (the API server checks it as ObjectMeta), so check
    # it as ObjectMeta by wrapping it in a kind kubernetes-validate knows.
    wrapper = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": rayservice()["metadata"]}
    kubernetes_validate.validate(wrapper, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("path,field", [
    (("spec",), "serveConfig"),  # the v1alpha1 spelling, pruned by v1
    (("spec", "rayClusterConfig", "headGroupSpec"), "replicas"),
    (("spec", "rayClusterConfig", "gcsFaultToleranceOptions"), "redisPasword"),
])
def test_crd_validation_rejects_unknown_fields(crd_validator, path, field):
    broken = copy.deepcopy(rayservice())
    node = broken
    for key in path:
        node = node[key]
    node[field] = "x"
    with pytest.raises(jsonschema.ValidationError, match=field):
        crd_validator.validate(broken)


def test_crd_validation_rejects_unknown_container_field(crd_validator):
    broken = copy.deepcopy(rayservice())
    head = broken["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["resource"] = head["containers"][0].pop("resources")
    with pytest.raises(jsonschema.ValidationError, match="resource"):
        crd_validator.validate(broken)


def test_crd_validation_keeps_int_or_string_quantities(crd_validator):
    """`additionalProperties: false` must not break int-or-string: cpu 2 and "500m" both pass."""
    doc = copy.deepcopy(rayservice())
    head = doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["resources"]["limits"]["cpu"] = 2
    head["resources"]["requests"]["cpu"] = "500m"
    crd_validator.validate(doc)
    head["resources"]["limits"]["cpu"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        crd_validator.validate(doc)


# ---------------------------------------------------------------- core kinds

@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("item", CORE, ids=_id)
def test_core_manifest_validates(item, version):
    _, doc = item
    kubernetes_validate.validate(doc, version, strict=True)


def test_kubernetes_validate_rejects_unknown_fields():
    _, statefulset = next(i for i in CORE if i[1]["kind"] == "StatefulSet")
    broken = copy.deepcopy(statefulset)
    broken["spec"]["replica"] = broken["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


# ---------------------------------------------------------------- cross references

def _defined() -> dict[tuple[str, str], set[str]]:
    """(kind, name) -> keys, for every Secret and ConfigMap that `kubectl apply -k` creates."""
    docs = [d for _, d in RESOURCES] + generated_resources()
    return {(d["kind"], d["metadata"]["name"]): set(d.get("data", {})) | set(d.get("stringData", {}))
            for d in docs if d["kind"] in ("Secret", "ConfigMap")}


def test_every_secret_and_configmap_reference_resolves():
    defined = _defined()
    refs = 0
    for _, doc in RESOURCES:
        for node in _walk(doc):
            for ref_key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                if ref_key in node:
                    ref = node[ref_key]
                    assert ref["key"] in defined.get((kind, ref["name"]), set()), ref
                    refs += 1
            for ref_key in ("configMap", "configMapRef"):  # volumes, envFrom
                if isinstance(node.get(ref_key), dict) and "name" in node[ref_key]:
                    assert ("ConfigMap", node[ref_key]["name"]) in defined, node
    assert refs >= 10  # the walk really found the env references


def _config_map(name: str) -> dict[str, str]:
    return next(d for _, d in RESOURCES
                if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name)["data"]


def _ray_containers() -> list[dict]:
    return [spec["containers"][0] for _, spec in pod_specs(rayservice())]


def test_ray_head_and_workers_get_the_same_settings():
    ray_containers = _ray_containers()
    assert len(ray_containers) >= 2
    for key in ("env", "envFrom"):
        assert all(c[key] == ray_containers[0][key] for c in ray_containers), key
    names = {e["name"] for e in ray_containers[0]["env"]}
    for source in ray_containers[0]["envFrom"]:
        names |= set(_config_map(source["configMapRef"]["name"]))
    assert {"NMEM_REDIS_URL", "NMEM_S3_ENDPOINT", "NMEM_S3_BUCKET", "NMEM_S3_ACCESS_KEY",
            "NMEM_S3_SECRET_KEY", "NMEM_API_KEYS"} <= names
    # Ray pods never see MinIO's root account.
    assert "MINIO_ROOT" not in str(ray_containers[0])


def test_live_actor_cap_fits_the_largest_cluster():
    """The autoscaler can always make room for NMEM_MAX_LIVE_ACTORS live memories (+ spares).

    Otherwise actors past the cluster's CPU capacity stay pending for ever and calls time out
    instead of the supervisor hibernating the least recently used memory.
    """
    from serve.settings import GatewaySettings

    settings = _config_map("neural-memory-config")
    actor_cpus = float(settings["NMEM_ACTOR_NUM_CPUS"])
    assert actor_cpus > 0, "0-CPU actors create no demand, so the autoscaler never scales"
    ray_cluster = rayservice()["spec"]["rayClusterConfig"]
    capacity = sum(g["maxReplicas"] * _quantity(g["template"]["spec"]["containers"][0]
                                               ["resources"]["limits"]["cpu"])
                   for g in ray_cluster["workerGroupSpecs"])
    args = serve_config()["applications"][0]["args"]
    defaults = GatewaySettings.model_fields
    encode_in = args.get("encode_in", defaults["encode_in"].default)
    deployments = ("gateway", "encoder") if encode_in == "deployment" else ("gateway",)
    serve_cpus = sum(args.get(f"{d}_replicas", defaults[f"{d}_replicas"].default)
                     * args.get(f"{d}_num_cpus", defaults[f"{d}_num_cpus"].default)
                     for d in deployments)
    actors = int(settings["NMEM_MAX_LIVE_ACTORS"]) + int(settings["NMEM_SPARE_ACTORS_MAX"])
    assert actors * actor_cpus + serve_cpus <= capacity


def _service_port(name: str) -> tuple[str, int]:
    svc = next(d for _, d in RESOURCES if d["kind"] == "Service" and d["metadata"]["name"] == name)
    return name, svc["spec"]["ports"][0]["port"]


def test_gcs_fault_tolerance_uses_the_same_redis():
    ray_cluster = rayservice()["spec"]["rayClusterConfig"]
    host, port = ray_cluster["gcsFaultToleranceOptions"]["redisAddress"].split(":")
    assert (host, int(port)) == _service_port("redis")
    env = ray_cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    url = next(e["value"] for e in env if e["name"] == "NMEM_REDIS_URL")
    assert re.fullmatch(rf"redis://:\$\([A-Z_]+\)@{host}:{port}/1", url), url


def test_head_node_fault_tolerance_is_configured_the_kuberay_way():
    """GCS state in the external Redis (so a new head pod reloads the cluster and the Serve
    apps), set only through gcsFaultToleranceOptions: KubeRay refuses it together with the old
    `ray.io/ft-enabled` annotation, and injects RAY_REDIS_ADDRESS / REDIS_PASSWORD on the head
    and a 600 s GCS reconnect timeout on the workers by itself (k8s/README.md)."""
    service = rayservice()
    ray_cluster = service["spec"]["rayClusterConfig"]
    ft = ray_cluster["gcsFaultToleranceOptions"]
    assert ft.get("backend", "redis") == "redis" and ft["externalStorageNamespace"]
    assert "secretKeyRef" in ft["redisPassword"]["valueFrom"]  # never a literal password
    for meta in (service["metadata"], ray_cluster["headGroupSpec"]["template"]["metadata"]):
        assert not {"ray.io/ft-enabled", "ray.io/external-storage-namespace"} & set(meta.get("annotations", {}))
    head = ray_cluster["headGroupSpec"]
    env = {e["name"] for e in head["template"]["spec"]["containers"][0]["env"]}
    assert not {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD", "RAY_external_storage_namespace"} & env
    assert "redis-password" not in head["rayStartParams"]
    for group in ray_cluster["workerGroupSpecs"]:
        worker_env = {e["name"]: e.get("value") for e in group["template"]["spec"]["containers"][0]["env"]}
        # A worker must outwait a head restart; unset, KubeRay makes it 600 s.
        assert float(worker_env.get("RAY_gcs_rpc_server_reconnect_timeout_s", 600)) >= 120


def test_ray_token_auth_is_on():
    assert rayservice()["spec"]["rayClusterConfig"]["authOptions"]["mode"] == "token"


def test_redis_is_a_statefulset_with_aof_on_a_volume():
    sts = next(d for _, d in RESOURCES if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "redis")
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    mounts = sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": claim, "mountPath": "/data"} in mounts


def test_minio_has_a_volume_and_a_bucket_job():
    sts = next(d for _, d in RESOURCES if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "minio")
    assert sts["spec"]["volumeClaimTemplates"]
    job = next(d for _, d in RESOURCES if d["kind"] == "Job")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[-1] == "/scripts/minio-setup.sh"
    script = K8S_DIR / "minio-setup.sh"
    assert "mc mb --ignore-existing" in script.read_text()
    syntax = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_workers_autoscale():
    ray_cluster = rayservice()["spec"]["rayClusterConfig"]
    assert ray_cluster["enableInTreeAutoscaling"] is True
    for group in ray_cluster["workerGroupSpecs"]:
        assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["minReplicas"] < group["maxReplicas"], group["groupName"]


def test_ingress_routes_to_the_kuberay_serve_service():
    ingress = next(d for _, d in RESOURCES if d["kind"] == "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == f"{rayservice()['metadata']['name']}-serve-svc"
    assert backend["port"]["number"] == serve_config()["http_options"]["port"] == 8000


# ---------------------------------------------------------------- every container

_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _quantity(value) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    return float(number) * _UNITS[unit]


ALL_CONTAINERS = [c for _, doc in RESOURCES for c in containers(doc)]


def test_found_every_container():
    labels = " ".join(label for label, _ in ALL_CONTAINERS)
    for expected in ("ray-head", "ray-worker", "autoscaler", "redis", "minio", "mc"):
        assert expected in labels


@pytest.mark.parametrize("label,container", ALL_CONTAINERS, ids=[c[0] for c in ALL_CONTAINERS])
def test_container_has_requests_and_limits(label, container):
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{label}: {kind}"
        for res in ("cpu", "memory"):
            assert _quantity(resources["requests"][res]) <= _quantity(resources["limits"][res])


@pytest.mark.parametrize("label,container", ALL_CONTAINERS, ids=[c[0] for c in ALL_CONTAINERS])
def test_container_is_locked_down(label, container):
    context = container.get("securityContext", {})
    assert context.get("allowPrivilegeEscalation") is False, label
    assert context.get("capabilities", {}).get("drop") == ["ALL"], label
    image = container.get("image")
    if image is not None:  # the autoscaler sidecar's image is the operator's choice
        assert ":" in image and not image.endswith(":latest"), f"{label}: pin {image}"


def test_pods_run_as_non_root():
    for _, doc in RESOURCES:
        for label, spec in pod_specs(doc):
            context = spec.get("securityContext", {})
            assert context.get("runAsNonRoot") is True, f"{doc['metadata']['name']} {label}"
            assert context.get("seccompProfile") == {"type": "RuntimeDefault"}
