"""S3CheckpointStore: checkpoints on any S3-compatible server (MinIO, SeaweedFS, AWS).

Path-style addressing (MinIO and SeaweedFS need it), the bucket is created on first use,
and every write is create-only via `If-None-Match: *` (also on the multipart completion).
Timeouts and retries are bounded so a down server or bad credentials surface as a
CheckpointError naming the endpoint within seconds instead of hanging an actor.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import boto3
from botocore import exceptions as boto_exc
from botocore.config import Config

from errors import CheckpointConflict, CheckpointError
from storage.checkpoints import check_expected_sha, check_key
from storage.codec import HEADER_SIZE, frame, unframe
from storage.translate import translate_s3

if TYPE_CHECKING:
    from storage.settings import StorageSettings

__all__ = ["S3CheckpointStore"]

_BOTO_ERRORS = (boto_exc.BotoCoreError, boto_exc.ClientError)
_MIB = 1024 * 1024
_SESSION_LOCK = threading.Lock()
_SESSION: list[boto3.session.Session] = []


def _make_client(**kwargs: Any) -> Any:
    """An S3 client from one shared session: loading the service model costs ~1 s per session,
    and sessions (unlike clients) are not thread-safe, hence the lock."""
    with _SESSION_LOCK:
        if not _SESSION:
            _SESSION.append(boto3.session.Session())
        return _SESSION[0].client("s3", **kwargs)


class S3CheckpointStore:
    """Checkpoint objects in `bucket` (under `prefix`) on the S3 server at `endpoint`."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        prefix: str = "",
        connect_timeout: float = 3.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
        multipart_threshold: int = 16 * _MIB,
        part_size: int = 8 * _MIB,
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        config = Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            # Newer botocore adds CRC checksums by default; older MinIO/SeaweedFS reject them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=32,
        )
        self._client: Any = _make_client(
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
            config=config,
        )
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: "StorageSettings") -> "S3CheckpointStore":
        if settings.s3_endpoint is None:
            raise CheckpointError("S3CheckpointStore needs NMEM_S3_ENDPOINT (e.g. http://minio:9000)")
        return cls(
            settings.s3_endpoint,
            settings.s3_bucket,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            region=settings.s3_region,
            prefix=settings.s3_prefix,
            connect_timeout=settings.s3_connect_timeout,
            read_timeout=settings.s3_read_timeout,
            max_attempts=settings.s3_max_attempts,
            multipart_threshold=settings.s3_multipart_threshold,
            part_size=settings.s3_part_size,
        )

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} at {self.endpoint}"

    def _object(self, key: str) -> str:
        return self.prefix + check_key(key)

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (once per store); proves endpoint and credentials work."""
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except boto_exc.ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                    raise translate_s3(exc, self.endpoint, f"bucket {self.bucket}") from exc
                self._create_bucket()
            except _BOTO_ERRORS as exc:
                raise translate_s3(exc, self.endpoint, f"bucket {self.bucket}") from exc
            self._bucket_ready = True

    def check_bucket(self) -> None:
        """CheckpointError unless the bucket is there now (readiness: it is created once, at
        first use; one deleted later held every checkpoint, and some servers would quietly
        make a new, empty one on the next write)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except _BOTO_ERRORS as exc:
            raise translate_s3(exc, self.endpoint, f"bucket {self.bucket}") from exc

    def _create_bucket(self) -> None:
        try:
            self._client.create_bucket(Bucket=self.bucket)
        except boto_exc.ClientError as exc:
            # Another process created it between our HEAD and CREATE: fine.
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise translate_s3(exc, self.endpoint, f"bucket {self.bucket}") from exc
        except _BOTO_ERRORS as exc:
            raise translate_s3(exc, self.endpoint, f"bucket {self.bucket}") from exc

    def put(self, key: str, data: bytes) -> dict:
        framed, sha = frame(data)
        name = self._object(key)
        self.ensure_bucket()
        if len(framed) >= self.multipart_threshold:
            self._put_multipart(key, name, framed)
        else:
            try:
                self._client.put_object(Bucket=self.bucket, Key=name, Body=framed, IfNoneMatch="*")
            except _BOTO_ERRORS as exc:
                raise translate_s3(exc, self.endpoint, key, conditional=True) from exc
        return {"key": key, "sha256": sha, "size": len(framed) - HEADER_SIZE}

    def _put_multipart(self, key: str, name: str, framed: bytes) -> None:
        # Cheap early answer; the conditional completion below is what makes it race-safe.
        if self.exists(key):
            raise CheckpointConflict(f"checkpoint {key} already exists on S3 at {self.endpoint}")
        try:
            upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=name)["UploadId"]
        except _BOTO_ERRORS as exc:
            raise translate_s3(exc, self.endpoint, key) from exc
        try:
            parts = self._upload_parts(name, upload_id, framed)
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except _BOTO_ERRORS as exc:
            self._abort(name, upload_id)
            raise translate_s3(exc, self.endpoint, key, conditional=True) from exc

    def _upload_parts(self, name: str, upload_id: str, framed: bytes) -> list[dict]:
        parts = []
        view = memoryview(framed)
        for number, start in enumerate(range(0, len(framed), self.part_size), start=1):
            chunk = view[start : start + self.part_size]
            reply = self._client.upload_part(
                Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=bytes(chunk)
            )
            parts.append({"ETag": reply["ETag"], "PartNumber": number})
        return parts

    def _abort(self, name: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
        except _BOTO_ERRORS:
            pass  # best effort: the original error is the one worth reporting

    def get(self, key: str, sha256: str | None = None) -> bytes:
        name = self._object(key)
        self.ensure_bucket()
        try:
            reply = self._client.get_object(Bucket=self.bucket, Key=name)
            with reply["Body"] as body:
                blob = body.read()
        except _BOTO_ERRORS as exc:
            raise translate_s3(exc, self.endpoint, key) from exc
        payload, actual = unframe(blob, f"{key} on S3 at {self.endpoint}")
        check_expected_sha(key, actual, sha256)
        return payload

    def exists(self, key: str) -> bool:
        name = self._object(key)
        self.ensure_bucket()
        try:
            self._client.head_object(Bucket=self.bucket, Key=name)
        except boto_exc.ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise translate_s3(exc, self.endpoint, key) from exc
        except _BOTO_ERRORS as exc:
            raise translate_s3(exc, self.endpoint, key) from exc
        return True

    def delete(self, key: str) -> None:
        name = self._object(key)
        self.ensure_bucket()
        try:
            self._client.delete_object(Bucket=self.bucket, Key=name)
        except _BOTO_ERRORS as exc:
            raise translate_s3(exc, self.endpoint, key) from exc

    def list(self, prefix: str = "") -> list[str]:
        keys = []
        self.ensure_bucket()
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                keys.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        except _BOTO_ERRORS as exc:
            raise translate_s3(exc, self.endpoint, f"list {prefix!r}") from exc
        return sorted(keys)

    def close(self) -> None:
        self._client.close()
