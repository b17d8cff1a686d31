"""Reading the deployment files the way their tools do, for offline validation.

Pure helpers, no I/O beyond reading files: load the k8s manifests and the compose file,
interpolate `${VAR}` like `docker compose`, make a CRD's openAPIV3Schema reject unknown fields
(the API server prunes them silently, so a typo would otherwise deploy as "nothing"), and walk
every container of a manifest.
"""

from __future__ import annotations

import copy
import gzip
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "k8s"
COMPOSE_FILE = REPO / "docker-compose.yml"
# Vendored schemas (versions, sources and licenses: tests/data/schemas/PROVENANCE.md).
SCHEMA_DIR = REPO / "tests" / "data" / "schemas"
COMPOSE_SCHEMA = SCHEMA_DIR / "compose-spec.json"
RAYSERVICE_CRD = SCHEMA_DIR / "ray.io_rayservices.yaml.gz"


# libyaml's loader when present: the CRD is 18k lines, ~8 s with the pure-Python one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml_docs(path: Path) -> list[dict]:
    """Every non-empty YAML document in a file (gzip-compressed if it ends in .gz)."""
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    return [doc for doc in yaml.load_all(text, Loader=_LOADER) if doc]


def kustomization() -> dict:
    return load_yaml_docs(K8S_DIR / "kustomization.yaml")[0]


def k8s_resources() -> list[tuple[str, dict]]:
    """(file name, manifest) for every document kustomization.yaml lists under `resources`."""
    out = []
    for name in kustomization()["resources"]:
        out += [(name, doc) for doc in load_yaml_docs(K8S_DIR / name)]
    return out


def rayservice() -> dict:
    found = [doc for _, doc in k8s_resources() if doc["kind"] == "RayService"]
    if len(found) != 1:
        raise ValueError(f"expected exactly one RayService in k8s/, found {len(found)}")
    return found[0]


def serve_config() -> dict:
    """The RayService's serveConfigV2, parsed (it is a YAML string inside the manifest)."""
    return yaml.safe_load(rayservice()["spec"]["serveConfigV2"])


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env-style file; comments and blank lines skipped."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"{path.name}: line without '=': {line!r}")
            out[key.strip()] = value.strip()
    return out


def generated_resources() -> list[dict]:
    """The Secret and ConfigMaps kustomize generates (secret values from secrets.env.example)."""
    kust = kustomization()
    out = []
    for gen in kust.get("secretGenerator", []):
        data: dict[str, str] = {}
        for env_file in gen.get("envs", []):
            example = K8S_DIR / f"{env_file}.example"
            data.update(read_env_file(example))
        out.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": gen["name"]}, "stringData": data})
    for gen in kust.get("configMapGenerator", []):
        data = {Path(f).name: (K8S_DIR / f).read_text() for f in gen.get("files", [])}
        out.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": gen["name"]}, "data": data})
    return out


# ---------------------------------------------------------------- CRD schema, unknown fields out

def _forbid_unknown(node: Any) -> None:
    """Add `additionalProperties: false` to every object schema that lists its properties.

    Kubernetes prunes unknown fields of a structural schema unless the node says
    `x-kubernetes-preserve-unknown-fields: true`; rejecting them instead turns a silently
    dropped (misspelt) field into a test failure. Maps (`additionalProperties: {...}`) and
    int-or-string (`anyOf` without `type: object`) are left as they are.
    """
    if not isinstance(node, dict):
        return
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if (node.get("type") == "object" and "properties" in node
            and "additionalProperties" not in node and not preserve):
        node["additionalProperties"] = False
    for child in node.get("properties", {}).values():
        _forbid_unknown(child)
    for key in ("items", "additionalProperties", "not"):
        _forbid_unknown(node.get(key))
    for key in ("anyOf", "allOf", "oneOf"):
        for child in node.get(key, []):
            _forbid_unknown(child)


def strict_crd_schema(crd_path: Path, version: str) -> dict:
    """A CRD version's openAPIV3Schema with unknown fields rejected everywhere."""
    crd = load_yaml_docs(crd_path)[0]
    matches = [v for v in crd["spec"]["versions"] if v["name"] == version]
    if not matches:
        raise ValueError(f"{crd_path.name} has no version {version!r}")
    schema = copy.deepcopy(matches[0]["schema"]["openAPIV3Schema"])
    _forbid_unknown(schema)
    return schema


# ---------------------------------------------------------------- containers

_POD_SPEC_PATHS = (
    ("spec", "template", "spec"),                                 # Deployment, StatefulSet, Job
    ("spec", "rayClusterConfig", "headGroupSpec", "template", "spec"),  # RayService head
)


def _dig(doc: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def pod_specs(doc: dict) -> Iterator[tuple[str, dict]]:
    """(label, pod spec) for every pod template in a manifest, RayService worker groups too."""
    for path in _POD_SPEC_PATHS:
        spec = _dig(doc, path)
        if spec is not None:
            yield "/".join(path), spec
    ray_cluster = _dig(doc, ("spec", "rayClusterConfig")) or {}
    for group in ray_cluster.get("workerGroupSpecs", []):
        yield f"workerGroup {group['groupName']}", group["template"]["spec"]


def containers(doc: dict) -> Iterator[tuple[str, dict]]:
    """(label, container) for every container, init container and the Ray autoscaler sidecar."""
    name = f"{doc['kind']}/{doc['metadata']['name']}"
    for label, spec in pod_specs(doc):
        for key in ("initContainers", "containers"):
            for container in spec.get(key, []):
                yield f"{name} {label} {container['name']}", container
    autoscaler = _dig(doc, ("spec", "rayClusterConfig", "autoscalerOptions"))
    if _dig(doc, ("spec", "rayClusterConfig", "enableInTreeAutoscaling")):
        yield f"{name} autoscaler sidecar", autoscaler or {}


# ---------------------------------------------------------------- compose interpolation

_INTERPOLATION = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose-style `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$`, recursively.

    Raises KeyError naming the variable, as `docker compose` refuses to start, when a
    required (`:?`) variable is unset or empty.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name = match.group("name")
        if name is None:
            return "$"  # `$$` is a literal dollar, left for the container's shell
        current, op, arg = env.get(name), match.group("op"), match.group("arg")
        if op in (":?", "?") and not current:
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-") and not current:
            return arg
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def compose_variables(text: str) -> set[str]:
    """Names of every `${VAR...}` the compose file reads from the environment / .env."""
    return {m.group("name") for m in _INTERPOLATION.finditer(text) if m.group("name")}
