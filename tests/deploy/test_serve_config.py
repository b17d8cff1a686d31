"""The serveConfigV2 inside k8s/rayservice.yaml: valid for Ray Serve, and it builds our app.

Ray's ServeDeploySchema ignores unknown keys for forward compatibility, so the test also
compares the config's keys with the schema's fields: a misspelt key fails instead of vanishing.
"""

from __future__ import annotations

import importlib

import pytest
from pydantic import BaseModel
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from tests.deploy.manifests import serve_config

# What every Ray pod gets from the Secret; the app refuses to build on 0.0.0.0 without keys.
DEPLOYED_ENV = {"NMEM_API_KEYS": "deploy-test-key-123:acme"}


def _unknown_keys(model: BaseModel, data: dict, path: str = "") -> list[str]:
    """Dotted paths of keys in `data` that `model` (validated from it) has no field for.

    Serve's schemas ignore unknown keys silently, so compare the input with the fields.
    """
    fields = type(model).model_fields
    by_key = {name: name for name in fields}
    by_key.update({f.alias: name for name, f in fields.items() if f.alias})
    found = []
    for key, raw in data.items():
        if key not in by_key:
            found.append(f"{path}{key}")
            continue
        value = getattr(model, by_key[key])
        if isinstance(value, BaseModel) and isinstance(raw, dict):
            found += _unknown_keys(value, raw, f"{path}{key}.")
        elif isinstance(value, list) and isinstance(raw, list):
            for index, (item, raw_item) in enumerate(zip(value, raw)):
                if isinstance(item, BaseModel) and isinstance(raw_item, dict):
                    found += _unknown_keys(item, raw_item, f"{path}{key}[{index}].")
    return found


@pytest.fixture(scope="module")
def schema() -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(serve_config())


@pytest.fixture(scope="module")
def app_config(schema):
    (app,) = schema.applications
    return app


def test_serve_config_validates(schema):
    unknown = _unknown_keys(schema, serve_config())
    assert not unknown, f"keys Ray Serve would silently ignore in serveConfigV2: {unknown}"


def test_unknown_key_would_be_caught():
    config = serve_config()
    config["http_options"]["prot"] = 8000
    config["applications"][0]["import_pth"] = "x"
    found = _unknown_keys(ServeDeploySchema.model_validate(config), config)
    assert found == ["http_options.prot", "applications[0].import_pth"]


def test_proxy_listens_on_every_node_on_8000(schema):
    assert schema.proxy_location.value == "EveryNode"
    assert (schema.http_options.host, schema.http_options.port) == ("0.0.0.0", 8000)


def test_one_app_at_root_built_by_build_app(app_config):
    assert app_config.import_path == "serve.app:build_app"
    assert app_config.route_prefix == "/"


def test_app_args_match_the_proxy_bind(schema, app_config):
    """The gateway's auth and MCP host checks must see the address the proxy really binds."""
    assert app_config.args["host"] == schema.http_options.host
    assert app_config.args["port"] == schema.http_options.port


def test_import_path_imports_and_builds_an_application(app_config, monkeypatch):
    for name, value in DEPLOYED_ENV.items():
        monkeypatch.setenv(name, value)
    module_name, attr = app_config.import_path.split(":")
    builder = getattr(importlib.import_module(module_name), attr)
    app = builder(dict(app_config.args))
    assert isinstance(app, Application)


def test_build_refuses_public_bind_without_keys(app_config, monkeypatch):
    """Without the Secret's keys the deployed config must not come up with auth off."""
    monkeypatch.delenv("NMEM_API_KEYS", raising=False)
    monkeypatch.delenv("NMEM_API_KEYS_FILE", raising=False)
    from errors import InvalidInput

    module_name, attr = app_config.import_path.split(":")
    builder = getattr(importlib.import_module(module_name), attr)
    with pytest.raises(InvalidInput, match="NMEM_API_KEYS"):
        builder(dict(app_config.args))
