"""Where durable state lives: one settings object for the metadata store and the checkpoint store.

Leave `redis_url` unset to get an embedded Valkey in `data_dir/valkey`; leave `s3_endpoint`
unset to keep checkpoints in `data_dir/checkpoints`. Each side is chosen independently.
Nothing here reads the environment until a `StorageSettings()` is built.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from storage.translate import redacted_url
from pydantic_settings import BaseSettings, SettingsConfigDict

import contract

__all__ = ["StorageSettings"]

# S3 bucket naming rules (the part every S3 implementation agrees on).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REDIS_SCHEMES = ("redis", "rediss", "unix")


class StorageSettings(BaseSettings):
    """Settings for `open_storage`; every field can be set as `NMEM_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="NMEM_", extra="ignore", allow_inf_nan=False)

    redis_url: str | None = Field(
        None, repr=False,  # may carry a password
        description="Redis/Valkey for metadata, stats and write-ahead logs (redis://host:6379/0). "
                    "Unset: an embedded Valkey in data_dir/valkey."
    )
    redis_prefix: str = Field(
        "nmem",
        description="Every Redis key starts with this, so several deployments (or tests) can share one "
                    "server."
    )
    redis_timeout: float = Field(
        5.0, gt=0,
        description="Seconds to wait for a Redis connect / reply before raising MetadataError."
    )
    s3_endpoint: str | None = Field(
        None,
        description="S3-compatible checkpoint store (MinIO, SeaweedFS, AWS), e.g. http://minio:9000. "
                    "Unset: checkpoint files in data_dir/checkpoints."
    )
    s3_bucket: str = Field("neural-memory", description="Bucket of the checkpoints (created if missing).")
    s3_access_key: str | None = Field(None, description="S3 access key (unset: boto3's usual sources).")
    s3_secret_key: str | None = Field(None, repr=False, description="S3 secret key.")
    s3_region: str = Field("us-east-1", description="S3 region name.")
    s3_prefix: str = Field(
        "",
        description="Every object key starts with this (e.g. \"prod/\"), so one bucket can hold several "
                    "deployments."
    )
    s3_connect_timeout: float = Field(
        3.0, gt=0,
        description="Seconds to wait for an S3 connection: a down or black-holed S3 fails fast "
                    "instead of hanging an actor."
    )
    s3_read_timeout: float = Field(30.0, gt=0, description="Seconds to wait for an S3 reply.")
    s3_max_attempts: int = Field(
        3, ge=1, le=10,
        description="Total attempts per S3 call (1 = no retry)."
    )
    s3_multipart_threshold: int = Field(
        16 * 1024 * 1024, ge=5 * 1024 * 1024,
        description="States at least this big are uploaded in parts of s3_part_size bytes (S3 minimum part: "
                    "5 MiB)."
    )
    s3_part_size: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024,
                              description="Part size of multipart uploads, bytes.")
    chunk_cache_mb: int = Field(
        64, ge=0, le=65_536,
        description="Checkpoint chunks each process keeps in memory (by sha256): waking a fork of a base "
                    "this actor process loaded before reads only its manifest from the store. 0: off.")
    data_dir: Path = Field(
        Path(".neural-memory"),
        description="Root of the embedded defaults (Valkey AOF, local checkpoints)."
    )

    # NMEM_DATA_DIR= (set but empty) is not the current directory (which would become 0700).
    @field_validator("data_dir", mode="before")
    @classmethod
    def _blank_data_dir_is_the_default(cls, value: object) -> object:
        return cls.model_fields["data_dir"].default if isinstance(value, str) and not value.strip() else value

    # NMEM_REDIS_URL= (set but empty) means "not set".
    _blank_is_unset = field_validator("redis_url", "s3_endpoint", "s3_access_key", "s3_secret_key",
                                      mode="before")(contract.blank_as_unset)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in _REDIS_SCHEMES:
            raise ValueError(
                f"NMEM_REDIS_URL must look like redis://host:6379/0 (got {redacted_url(value)!r}); "
                "leave it unset to use the embedded Valkey"
            )
        return value

    @field_validator("s3_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"NMEM_S3_ENDPOINT must look like http://host:9000 (got {redacted_url(value)!r}); "
                "leave it unset to keep checkpoints in the local data directory"
            )
        return value.rstrip("/")

    @field_validator("s3_bucket")
    @classmethod
    def _check_bucket(cls, value: str) -> str:
        if not _BUCKET_RE.match(value) or ".." in value:
            raise ValueError(
                f"NMEM_S3_BUCKET {value!r} is not a valid bucket name: use 3-63 characters "
                "of lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
            )
        return value

    @field_validator("redis_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value or any(c.isspace() or c in ":{}*?[]" for c in value):
            raise ValueError(
                f"NMEM_REDIS_PREFIX {value!r} must be non-empty, without spaces, ':', braces or glob characters"
            )
        return value

    @field_validator("s3_prefix")
    @classmethod
    def _check_s3_prefix(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"NMEM_S3_PREFIX {value!r} must be relative and contain no '..' segment")
        return value

    @property
    def embedded_redis(self) -> bool:
        """True when open_storage will start (or has started) its own Valkey."""
        return self.redis_url is None

    @property
    def valkey_dir(self) -> Path:
        """Directory of the embedded Valkey's append-only file."""
        return self.data_dir / "valkey"

    @property
    def checkpoint_dir(self) -> Path:
        """Directory of the LocalCheckpointStore."""
        return self.data_dir / "checkpoints"
