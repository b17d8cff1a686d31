"""Memory images in OCI registries: `push` and `pull` with the `oras` library.

An image travels as an OCI artifact: one layer, the `.nmem` file (media type
`image.MEDIA_TYPE`), and a config blob holding the image's header as JSON
(`image.CONFIG_MEDIA_TYPE`), so `oras manifest fetch` or a registry UI shows which memory,
encoder and weight hash it holds. `pull` refuses anything else and checks the layer's digest
before the file is opened.

Credentials: `username`/`password` if given, else what `docker login` left in the docker
config (~/.docker/config.json, including credential helpers). A registry that asks for
Basic auth (htpasswd) and one that hands out bearer tokens both work. Plain HTTP is used
for localhost registries (as docker does) or when `plain_http` is set.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from errors import AuthError, InvalidInput, NeuralMemoryError, NotFound, Unavailable
from neural_memory import image

__all__ = ["PushResult", "push_image", "pull_image", "parse_reference"]

TITLE_ANNOTATION = "org.opencontainers.image.title"
LOCAL_HOSTS = ("localhost", "127.", "[::1]")
# A repository name, as registries check it (OCI distribution spec): parts joined by "/".
REPOSITORY_NAME = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")


@dataclass(frozen=True)
class PushResult:
    reference: str
    digest: str  # the manifest digest, e.g. sha256:...
    header: image.ImageHeader


@dataclass(frozen=True)
class RegistryAuth:
    username: str | None = None
    password: str | None = None
    docker_config: str | None = None  # another docker config.json to read credentials from
    plain_http: bool | None = None  # None: plain HTTP for localhost registries only


def parse_reference(ref: str):
    """REGISTRY/REPO:TAG (or @sha256:...) as an oras Container; InvalidInput if malformed."""
    import oras.container

    if "/" not in ref:
        raise InvalidInput(f"registry reference {ref!r} needs a registry host: "
                           "e.g. localhost:5000/memories/notes:v1")
    try:
        container = oras.container.Container(ref)
    except ValueError as exc:
        raise InvalidInput(f"registry reference {ref!r} is not valid: {exc}") from None
    if not REPOSITORY_NAME.fullmatch(container.api_prefix):
        raise InvalidInput(f"registry reference {ref!r}: the repository name {container.api_prefix!r} must be "
                           "lowercase letters and digits, in parts split by '/' and joined by '.', '_', '__' "
                           "or '-' (OCI distribution spec), e.g. localhost:5000/memories/notes:v1")
    return container


def _client(container, auth: RegistryAuth):
    import logging

    import oras.client
    import requests

    # oras logs a registry's refusal ("manifest unknown") on its own line as well as raising it;
    # the error it raises is what the caller shows (`_registry_error`), once.
    logging.getLogger("oras.logger").setLevel(logging.CRITICAL)
    host = container.registry
    plain = auth.plain_http if auth.plain_http is not None else host.startswith(LOCAL_HOSTS)
    scheme = "http" if plain else "https"
    try:  # Basic (htpasswd) registries and token registries need different oras backends
        probe = requests.get(f"{scheme}://{host}/v2/", timeout=10)
    except requests.RequestException as exc:
        raise Unavailable(f"cannot reach registry {host} over {scheme}: {exc}") from None
    challenge = probe.headers.get("WWW-Authenticate", "")
    backend = "basic" if challenge.lower().startswith("basic") else "token"
    client = oras.client.OrasClient(hostname=host, insecure=plain, auth_backend=backend)
    if auth.username is not None:
        # An auth config of our own stops oras from reading (and preferring) the docker config.
        token = base64.b64encode(f"{auth.username}:{auth.password or ''}".encode()).decode()
        client.auth._auth_config = {"auths": {host: {"auth": token}}}
    elif backend == "basic" and not _has_credentials(client, container, auth):
        raise AuthError(f"registry {host} needs a username and password: pass --username/"
                        "--password or run `docker login` first")
    return client


def _has_credentials(client, container, auth: RegistryAuth) -> bool:
    client.auth.load_configs(container, configs=[auth.docker_config] if auth.docker_config else None)
    return bool(getattr(client.auth, "_basic_auth", None))


def _registry_error(action: str, ref: str, exc: Exception) -> NeuralMemoryError:
    import requests

    text = str(exc)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403) or "authentication" in text.lower() or "unauthorized" in text.lower():
        return AuthError(f"{action} {ref}: the registry refused the credentials ({text})")
    if status == 404 or "manifest unknown" in text.lower() or "not found" in text.lower():
        return NotFound(f"{action} {ref}: not found in the registry ({text})")
    if isinstance(exc, requests.RequestException):
        return Unavailable(f"{action} {ref}: {text}")
    return NeuralMemoryError(f"{action} {ref} failed: {text}")


def push_image(path: str | Path, ref: str, auth: RegistryAuth = RegistryAuth()) -> PushResult:
    """Push an image file to `ref` (REGISTRY/REPO:TAG) as an OCI artifact."""
    header = image.read_file(path).header  # only valid images leave this machine
    container = parse_reference(ref)
    client = _client(container, auth)
    with tempfile.TemporaryDirectory(prefix="nmem-push-") as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(header.model_dump(mode="json"), sort_keys=True))
        layer = Path(tmp) / f"{header.name}.nmem"
        layer.write_bytes(Path(path).read_bytes())
        try:
            response = client.push(
                target=ref, files=[f"{layer}:{image.MEDIA_TYPE}"], disable_path_validation=True,
                manifest_config=f"{config}:{image.CONFIG_MEDIA_TYPE}", quiet=True,
                config_path=auth.docker_config,
                manifest_annotations={"io.neural-memory.weight-hash": header.weight_hash,
                                      "io.neural-memory.encoder": header.encoder})
        except Exception as exc:  # noqa: BLE001 - oras raises plain exceptions; sort them
            raise _registry_error("push to", ref, exc) from exc
    return PushResult(ref, response.headers.get("Docker-Content-Digest", ""), header)


def pull_image(ref: str, path: str | Path, auth: RegistryAuth = RegistryAuth()) -> image.ImageHeader:
    """Download the image at `ref` to `path`, refusing anything that is not a memory image."""
    container = parse_reference(ref)
    client = _client(container, auth)
    try:
        if auth.docker_config:
            client.auth.load_configs(container, configs=[auth.docker_config])
        manifest = client.get_manifest(container)
        layer = _image_layer(ref, manifest)
        with tempfile.TemporaryDirectory(prefix="nmem-pull-") as tmp:
            blob = Path(tmp) / "image.nmem"
            client.download_blob(container, layer["digest"], str(blob))
            data = blob.read_bytes()
    except NeuralMemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - oras raises plain exceptions; sort them
        raise _registry_error("pull", ref, exc) from exc
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if digest != layer["digest"]:
        raise InvalidInput(f"pull {ref}: the downloaded image does not match its digest "
                           f"({digest[:19]}… instead of {layer['digest'][:19]}…)")
    header = image.decode(data, source=ref).header
    image.write_file(path, [data])
    return header


def _image_layer(ref: str, manifest: dict) -> dict:
    config_type = (manifest.get("config") or {}).get("mediaType")
    layers = [x for x in manifest.get("layers", []) if x.get("mediaType") == image.MEDIA_TYPE]
    if config_type != image.CONFIG_MEDIA_TYPE or len(layers) != 1:
        raise InvalidInput(f"{ref} is not a neural-memory image (config media type "
                           f"{config_type!r}; expected {image.CONFIG_MEDIA_TYPE!r} and one layer "
                           f"of {image.MEDIA_TYPE!r})")
    return layers[0]
