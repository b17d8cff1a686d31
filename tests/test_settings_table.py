"""Every setting appears in the README's table, exactly as the models describe it.

The table is generated from the pydantic models (`python -m serve.settings`); a new field, a
changed default or description makes this fail until the README is regenerated.
"""

from pathlib import Path

from serve.settings import SETTINGS_TABLE_END, SETTINGS_TABLE_START, settings_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_settings_table_is_the_generated_one():
    text = README.read_text(encoding="utf-8")
    start, end = text.index(SETTINGS_TABLE_START), text.index(SETTINGS_TABLE_END) + len(SETTINGS_TABLE_END)
    assert text[start:end] == settings_table(), \
        "README settings table is stale: paste the output of `python -m serve.settings`"


def test_the_table_names_every_field_of_every_settings_model():
    from actors import ActorSettings
    from cluster import ClusterSettings
    from storage import StorageSettings

    from serve.settings import GatewaySettings

    table = settings_table()
    for model in (GatewaySettings, ClusterSettings, StorageSettings, ActorSettings):
        for name in model.model_fields:
            if model is ClusterSettings and name in ("storage", "actor"):
                continue
            assert f"`NMEM_{name.upper()}`" in table, name


def test_a_refused_setting_names_its_variable_and_never_its_value(monkeypatch):
    import pytest

    from errors import InvalidInput
    from serve.app import read_settings

    secret = "short-key-15chr"
    monkeypatch.setenv("NMEM_METRICS_KEY", secret)
    monkeypatch.setenv("NMEM_S3_SECRET_KEY", "s3-secret-value")
    with pytest.raises(InvalidInput) as caught:
        read_settings()
    message = str(caught.value)
    assert "NMEM_METRICS_KEY" in message and "16 characters" in message, message
    assert secret not in message and "s3-secret-value" not in message
