"""LocalCheckpointStore: checkpoints as files in a directory (the embedded default).

A put writes a temp file in the target folder, fsyncs it, then hard-links it to the final
name. `os.link` fails if the name exists, so create-only holds even when threads or
processes race (a rename would silently overwrite the winner). The folder is fsynced too,
so an acknowledged checkpoint survives a power cut.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from errors import CheckpointConflict, CheckpointError
from storage.checkpoints import check_expected_sha, check_key
from storage.codec import HEADER_SIZE, frame, unframe
from storage.translate import translate_os

__all__ = ["LocalCheckpointStore"]

_TMP_PREFIX = ".tmp-"
PUT_ATTEMPTS = 5  # a put whose folder a concurrent delete pruned makes it again


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalCheckpointStore:
    """Checkpoint objects as framed files under `root` (created on first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def describe(self) -> str:
        return f"local directory {self.root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> dict:
        framed, sha = frame(data)
        path = self._path(key)
        for attempt in range(PUT_ATTEMPTS):
            last = attempt == PUT_ATTEMPTS - 1
            try:
                # A delete may prune the folder (or its parent) meanwhile: made again, and
                # FileExistsError from makedirs is such a race too, not a taken key.
                os.makedirs(path.parent, exist_ok=True)
            except OSError as exc:
                if last:
                    raise translate_os(exc, str(self.root), key) from exc
                continue
            try:
                if path.exists():
                    raise CheckpointConflict(f"checkpoint {key} already exists in {self.root}")
                self._write_new(path, framed, key)
                _fsync_dir(path.parent)
                break
            except CheckpointError:
                raise
            except FileNotFoundError as exc:  # the folder was pruned between makedirs and the write
                if last:
                    raise translate_os(exc, str(self.root), key) from exc
            except OSError as exc:
                raise translate_os(exc, str(self.root), key) from exc
        return {"key": key, "sha256": sha, "size": len(framed) - HEADER_SIZE}

    def _write_new(self, path: Path, framed: bytes, key: str) -> None:
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(framed)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)  # atomic create-only publish
            except FileExistsError as exc:
                raise CheckpointConflict(f"checkpoint {key} already exists in {self.root}") from exc
        finally:
            os.unlink(tmp)

    def get(self, key: str, sha256: str | None = None) -> bytes:
        try:
            blob = self._path(key).read_bytes()
        except OSError as exc:
            raise translate_os(exc, str(self.root), key) from exc
        payload, actual = unframe(blob, f"{key} in {self.root}")
        check_expected_sha(key, actual, sha256)
        return payload

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise translate_os(exc, str(self.root), key) from exc
        self._prune_empty(path.parent)

    def _prune_empty(self, folder: Path) -> None:
        """Remove the folders a delete left empty, up to the root: a deleted memory leaves none
        behind, and listings do not walk ever more of them."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): the folders above are not either
                return
            folder = folder.parent

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        keys = []
        try:
            for folder, _dirs, files in os.walk(self.root):
                rel = Path(folder).relative_to(self.root)
                for name in files:
                    if name.startswith(_TMP_PREFIX):
                        continue
                    key = (rel / name).as_posix()
                    if key.startswith(prefix):
                        keys.append(key)
        except OSError as exc:
            raise translate_os(exc, str(self.root), f"list {prefix!r}") from exc
        return sorted(keys)

    def close(self) -> None:
        """Nothing to release; present for the CheckpointStore protocol."""
