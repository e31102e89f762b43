"""The file storage port (KYC documents and the like) and its local-disk and S3 adapters.

Keys are relative, slash-separated paths such as `kyc/12/3f2a….pdf`. Both adapters accept
exactly the same keys (`validate_key`): segments of ASCII letters, digits, `.`, `_` and `-`
that start with a letter or digit, so no `..`, no absolute paths, no empty segments, no
backslashes and nothing a filesystem or an S3 console would read differently. Anything else
is a `ValueError`: a bad key is a bug in the caller, never data from a client.

Both adapters block (disk I/O, boto3), so every call runs in a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio.to_thread

from tradeos.core.errors import NotFound

if TYPE_CHECKING:
    from tradeos.config import Settings

T = TypeVar("T")

MAX_KEY_LENGTH = 1024  # S3's limit (bytes; keys are ASCII, so characters too)
MAX_SEGMENT_LENGTH = 255  # NAME_MAX on common filesystems
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Printable ASCII only: a content type ends up in an HTTP header.
_CONTENT_TYPE = re.compile(r"[\x20-\x7e]{1,255}")

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


class FileStorage(Protocol):
    """Where uploaded files live. Keys are checked by `validate_key`."""

    name: str

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key`, replacing what was there."""

    async def get(self, key: str) -> bytes:
        """The bytes under `key`; `NotFound` if there are none."""

    async def delete(self, key: str) -> None:
        """Remove `key`; nothing happens if it is not there."""

    async def exists(self, key: str) -> bool:
        """Whether something is stored under `key`."""

    async def aclose(self) -> None:
        """Release connections; a no-op where there are none."""


def validate_key(key: str) -> str:
    """`key` unchanged if it is a safe storage key, else `ValueError`."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError("storage key must be a non-empty string of at most 1024 characters")
    for segment in key.split("/"):
        # fullmatch, not match + `$`: `$` would let a trailing newline through.
        if len(segment) > MAX_SEGMENT_LENGTH or _SEGMENT.fullmatch(segment) is None:
            raise ValueError(f"unsafe storage key {key!r}")
    return key


def _validate_content_type(content_type: str) -> str:
    if not isinstance(content_type, str) or _CONTENT_TYPE.fullmatch(content_type) is None:
        raise ValueError("content type must be printable ASCII, 1 to 255 characters")
    return content_type


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(partial(function, *args))


# -- local disk ----------------------------------------------------------------------------


class LocalFileStorage:
    """Files under `root`, one file per key, written atomically with mode 0600.

    `root` is created (mode 0700) on the first write; nothing under it is ever served over HTTP
    directly. Temporary files start with a dot, which no valid key does, so a half-written
    upload can never be read back as a key."""

    name: str = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        validate_key(key)
        _validate_content_type(content_type)  # not stored: the caller keeps it with the record
        await _in_thread(self._write, key, bytes(data))

    async def get(self, key: str) -> bytes:
        validate_key(key)
        return await _in_thread(self._read, key)

    async def delete(self, key: str) -> None:
        validate_key(key)
        await _in_thread(self._remove, key)

    async def exists(self, key: str) -> bool:
        validate_key(key)
        return await _in_thread(self._is_file, key)

    async def aclose(self) -> None:
        return None

    # The blocking halves, run in a worker thread.

    def _path(self, key: str) -> Path:
        """The file for `key`, refusing anything that resolves outside root (a symlink, say)."""
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"storage key {key!r} leads outside the storage root")
        return path

    def _write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self._make_directories(path.parent)
        descriptor, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "wb") as file:
                os.fchmod(file.fileno(), FILE_MODE)  # mkstemp's 0600 already; say so anyway
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_directory(path.parent)

    def _make_directories(self, directory: Path) -> None:
        """Create `directory` and any missing parents down from root, each mode 0700."""
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
            os.chmod(self.root, DIRECTORY_MODE)  # mkdir's mode is masked by the umask
        current = self.root
        for part in directory.relative_to(self.root).parts:
            current = current / part
            try:
                current.mkdir(mode=DIRECTORY_MODE)
            except FileExistsError:
                continue
            os.chmod(current, DIRECTORY_MODE)
        # Re-check after creating: a directory swapped for a symlink must not redirect writes.
        if not directory.resolve().is_relative_to(self.root):
            raise ValueError("storage directory leads outside the storage root")

    def _read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"No stored file {key!r}.") from None

    def _remove(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            return  # a directory is not a stored file
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            path.unlink()

    def _is_file(self, key: str) -> bool:
        return self._path(key).is_file()


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; best effort (not every platform can open a directory)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# -- S3 ------------------------------------------------------------------------------------

# What S3 (and compatible stores) answer for a key that is not there; HEAD has no body, so
# its error code is the bare status.
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class S3FileStorage:
    """Objects in an S3 (or S3-compatible) bucket, under an optional key prefix.

    Every object is written with server-side encryption (SSE-S3, AES256). boto3 is the `s3`
    extra: it is imported here, not at the top, and settings refuse STORAGE_BACKEND=s3 when it
    is not installed. boto3 clients are thread-safe and blocking, so calls run in threads."""

    name: str = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        prefix: str = "",
    ) -> None:
        # boto3 ships no type information; the client is typed Any below.
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        if not bucket:
            raise ValueError("S3 storage needs a bucket name")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self._client_error: type[Exception] = ClientError
        # A session of its own: boto3's default session is shared and not thread-safe.
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                connect_timeout=5,
                read_timeout=30,
                retries={"mode": "standard", "max_attempts": 3},
            ),
        )

    def _object_key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _is_missing(self, error: Exception) -> bool:
        if not isinstance(error, self._client_error):
            return False
        # By code, not HTTP status: a missing bucket is a 404 too, and that is a setup error.
        response: Any = getattr(error, "response", {})
        return str(response.get("Error", {}).get("Code", "")) in _MISSING_CODES

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        object_key = self._object_key(key)
        _validate_content_type(content_type)
        await _in_thread(
            partial(
                self._client.put_object,
                Bucket=self.bucket,
                Key=object_key,
                Body=bytes(data),
                ContentType=content_type,
                ServerSideEncryption="AES256",
            )
        )

    async def get(self, key: str) -> bytes:
        object_key = self._object_key(key)
        return await _in_thread(self._read, object_key, key)

    def _read(self, object_key: str, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=object_key)
        except Exception as error:
            if self._is_missing(error):
                raise NotFound(f"No stored file {key!r}.") from None
            raise
        body = response["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    async def delete(self, key: str) -> None:
        # S3's DeleteObject already succeeds for a missing key.
        object_key = self._object_key(key)
        await _in_thread(partial(self._client.delete_object, Bucket=self.bucket, Key=object_key))

    async def exists(self, key: str) -> bool:
        object_key = self._object_key(key)
        return await _in_thread(self._head, object_key)

    def _head(self, object_key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=object_key)
        except Exception as error:
            if self._is_missing(error):
                return False
            raise
        return True

    async def aclose(self) -> None:
        await _in_thread(self._client.close)


# -- choosing one --------------------------------------------------------------------------


def make_storage(settings: Settings) -> FileStorage:
    """The adapter STORAGE_BACKEND names."""
    if settings.storage_backend == "s3":
        if not settings.s3_bucket:
            raise ValueError("STORAGE_BACKEND=s3 needs S3_BUCKET")
        return S3FileStorage(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
        )
    if settings.storage_backend == "local":
        if settings.storage_dir is None:
            raise ValueError("STORAGE_BACKEND=local needs STORAGE_DIR")
        return LocalFileStorage(settings.storage_dir)
    raise ValueError(f"unknown storage backend {settings.storage_backend!r}")
