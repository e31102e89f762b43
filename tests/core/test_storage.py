"""The file storage port: the local-disk adapter on a temporary directory, S3 under moto."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_BUCKET as BUCKET
from tests.conftest import TEST_REGION as REGION
from tradeos.config import Settings
from tradeos.core.errors import NotFound
from tradeos.core.storage import (
    FileStorage,
    LocalFileStorage,
    S3FileStorage,
    make_storage,
    validate_key,
)

KEY = "kyc/12/3f2a9c.pdf"
PDF = "application/pdf"

BAD_KEYS = [
    "",
    "../x",
    "..",
    ".",
    "/etc/passwd",
    "/abs",
    "a//b",
    "a/",
    "/",
    "a/../../b",
    "a/./b",
    "kyc/../../etc/passwd",
    "kyc/ü.pdf",
    "kyc/\u2024\u2024/x",  # ONE DOT LEADER, which looks like a dot
    "kyc/ｘ.pdf",  # fullwidth x
    "a\\b",
    "..\\..\\windows\\win.ini",
    "C:\\x",
    "a b",
    "x\n",
    "a\x00b",
    "~/x",
    "$HOME/x",
    ".hidden",
    "kyc/.x.tmp",
    "-rf",
    "x" * 256,
    "/".join(["a"] * 600),
]


def _tree(path: Path) -> set[str]:
    return {str(item.relative_to(path)) for item in path.rglob("*")}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("key", ["a", "kyc/12/3f2a.pdf", "A-b_c.D/0.9", "x" * 255])
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message names the key, not a rule
        validate_key(key)


# -- local -------------------------------------------------------------------------------


@pytest.fixture
def local_root(tmp_path: Path) -> Path:
    return tmp_path / "store" / "files"


@pytest.fixture
def local(local_root: Path) -> LocalFileStorage:
    return LocalFileStorage(local_root)


async def test_local_round_trip(local: LocalFileStorage, local_root: Path) -> None:
    storage: FileStorage = local
    assert storage.name == "local"
    assert not await storage.exists(KEY)
    await storage.put(KEY, b"%PDF-1.4 hello", PDF)
    assert await storage.exists(KEY)
    assert await storage.get(KEY) == b"%PDF-1.4 hello"
    assert (local_root / KEY).read_bytes() == b"%PDF-1.4 hello"
    await storage.aclose()  # a no-op, and safe to call


async def test_local_overwrite_leaves_no_temporary_files(
    local: LocalFileStorage, local_root: Path
) -> None:
    await local.put(KEY, b"first", PDF)
    await local.put(KEY, b"second, longer", PDF)
    await local.put(KEY, b"3", PDF)
    assert await local.get(KEY) == b"3"
    assert _tree(local_root) == {"kyc", "kyc/12", KEY}


async def test_local_empty_file(local: LocalFileStorage) -> None:
    await local.put("empty", b"", "application/octet-stream")
    assert await local.exists("empty")
    assert await local.get("empty") == b""


async def test_local_permissions(local: LocalFileStorage, local_root: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        await local.put(KEY, b"secret", PDF)
    finally:
        os.umask(old_umask)
    assert _mode(local_root / KEY) == 0o600
    for directory in (local_root, local_root / "kyc", local_root / "kyc" / "12"):
        assert _mode(directory) == 0o700, directory
    await local.put(KEY, b"again", PDF)
    assert _mode(local_root / KEY) == 0o600


async def test_local_delete_is_idempotent(local: LocalFileStorage) -> None:
    await local.put(KEY, b"x", PDF)
    await local.delete(KEY)
    assert not await local.exists(KEY)
    await local.delete(KEY)
    await local.delete("never/stored")
    with pytest.raises(NotFound):
        await local.get(KEY)


async def test_local_missing_is_not_found(local: LocalFileStorage) -> None:
    with pytest.raises(NotFound):
        await local.get("kyc/1/missing.pdf")  # root does not even exist yet
    await local.put(KEY, b"x", PDF)
    with pytest.raises(NotFound):
        await local.get("kyc/12")  # a directory is not a stored file
    with pytest.raises(NotFound):
        await local.get(f"{KEY}/below-a-file")
    assert not await local.exists("kyc/12")
    await local.delete("kyc/12")
    assert await local.exists(KEY)


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_local_refuses_unsafe_keys(
    key: str, local: LocalFileStorage, local_root: Path, tmp_path: Path
) -> None:
    await local.put("kyc/ok", b"ok", PDF)
    before = _tree(tmp_path)
    with pytest.raises(ValueError):  # noqa: PT011
        await local.put(key, b"evil", PDF)
    with pytest.raises(ValueError):  # noqa: PT011
        await local.get(key)
    with pytest.raises(ValueError):  # noqa: PT011
        await local.exists(key)
    with pytest.raises(ValueError):  # noqa: PT011
        await local.delete(key)
    assert _tree(tmp_path) == before
    assert await local.get("kyc/ok") == b"ok"


@pytest.fixture
def outside(local_root: Path, tmp_path: Path) -> Path:
    """A directory beside the root, and symlinks inside the root that lead to it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep me")
    local_root.mkdir(parents=True)
    (local_root / "link").symlink_to(outside, target_is_directory=True)
    (local_root / "file-link").symlink_to(outside / "victim")
    return outside


async def test_local_refuses_symlinks_out_of_root(local: LocalFileStorage, outside: Path) -> None:
    for key in ("link/victim", "link/new", "file-link"):
        with pytest.raises(ValueError, match="outside the storage root"):
            await local.put(key, b"evil", PDF)
        with pytest.raises(ValueError, match="outside the storage root"):
            await local.get(key)
        with pytest.raises(ValueError, match="outside the storage root"):
            await local.delete(key)
    assert _tree(outside) == {"victim"}
    assert (outside / "victim").read_bytes() == b"keep me"


async def test_local_refuses_bad_content_type(local: LocalFileStorage, local_root: Path) -> None:
    for content_type in ("", "text/html\r\nX-Evil: 1", "application/pdf\x00"):
        with pytest.raises(ValueError, match="content type"):
            await local.put(KEY, b"x", content_type)
    assert not _tree(local_root)


async def test_local_failed_write_keeps_old_content(
    local: LocalFileStorage, local_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local.put(KEY, b"old", PDF)

    def broken_replace(*_args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        await local.put(KEY, b"new", PDF)
    monkeypatch.undo()
    assert await local.get(KEY) == b"old"
    assert _tree(local_root) == {"kyc", "kyc/12", KEY}


async def test_local_concurrent_writes_never_mix(local: LocalFileStorage) -> None:
    payloads = [bytes([index]) * 100_000 for index in range(20)]
    await asyncio.gather(*(local.put(KEY, payload, PDF) for payload in payloads))
    assert await local.get(KEY) in payloads


def test_make_storage_local(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, storage_dir=tmp_path / "documents")  # type: ignore[call-arg]
    storage = make_storage(settings)
    assert isinstance(storage, LocalFileStorage)
    assert storage.name == "local"
    assert storage.root == (tmp_path / "documents").resolve()


def test_make_storage_defaults_to_data_dir(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]
    storage = make_storage(settings)
    assert isinstance(storage, LocalFileStorage)
    assert storage.root == (tmp_path / "data" / "files").resolve()


# -- S3 (moto) ---------------------------------------------------------------------------


@pytest.fixture
async def s3(aws: Any) -> AsyncIterator[S3FileStorage]:
    storage = S3FileStorage(BUCKET, endpoint_url=None, region=REGION, prefix="tradeos")
    yield storage
    await storage.aclose()


async def test_s3_round_trip_with_encryption(s3: S3FileStorage, aws: Any) -> None:
    storage: FileStorage = s3
    assert storage.name == "s3"
    assert not await storage.exists(KEY)
    await storage.put(KEY, b"%PDF-1.4 hello", PDF)
    assert await storage.exists(KEY)
    assert await storage.get(KEY) == b"%PDF-1.4 hello"

    head = aws.head_object(Bucket=BUCKET, Key=f"tradeos/{KEY}")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == PDF
    listed = aws.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert [item["Key"] for item in listed] == [f"tradeos/{KEY}"]


async def test_s3_requests_encryption_on_every_put(s3: S3FileStorage) -> None:
    sent: list[dict[str, Any]] = []
    s3._client.meta.events.register(
        "provide-client-params.s3.PutObject", lambda params, **_: sent.append(dict(params))
    )
    await s3.put("a", b"1", "image/png")
    await s3.put("a", b"2", "image/png")
    assert [params["ServerSideEncryption"] for params in sent] == ["AES256", "AES256"]


async def test_s3_overwrite(s3: S3FileStorage) -> None:
    await s3.put(KEY, b"first", PDF)
    await s3.put(KEY, b"second", PDF)
    assert await s3.get(KEY) == b"second"


async def test_s3_missing_is_not_found(s3: S3FileStorage) -> None:
    with pytest.raises(NotFound):
        await s3.get("kyc/1/missing.pdf")
    assert not await s3.exists("kyc/1/missing.pdf")


async def test_s3_delete_is_idempotent(s3: S3FileStorage) -> None:
    await s3.put(KEY, b"x", PDF)
    await s3.delete(KEY)
    assert not await s3.exists(KEY)
    await s3.delete(KEY)
    with pytest.raises(NotFound):
        await s3.get(KEY)


async def test_s3_missing_bucket_is_not_a_missing_file(aws: Any) -> None:
    from botocore.exceptions import ClientError

    storage = S3FileStorage("no-such-bucket-here", endpoint_url=None, region=REGION)
    try:
        with pytest.raises(ClientError, match="NoSuchBucket"):
            await storage.get(KEY)
    finally:
        await storage.aclose()


async def test_s3_refuses_unsafe_keys(s3: S3FileStorage, aws: Any) -> None:
    # One test for all keys: a fresh mocked bucket per key would cost a second of setup each.
    for key in BAD_KEYS:
        with pytest.raises(ValueError):  # noqa: PT011
            await s3.put(key, b"evil", PDF)
        with pytest.raises(ValueError):  # noqa: PT011
            await s3.get(key)
        with pytest.raises(ValueError):  # noqa: PT011
            await s3.exists(key)
        with pytest.raises(ValueError):  # noqa: PT011
            await s3.delete(key)
    assert "Contents" not in aws.list_objects_v2(Bucket=BUCKET)


@pytest.mark.parametrize("prefix", ["../x", "a//b", "ü"])
def test_s3_refuses_unsafe_prefix(prefix: str, aws: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        S3FileStorage(BUCKET, endpoint_url=None, region=REGION, prefix=prefix)


async def test_s3_without_prefix(aws: Any) -> None:
    storage = S3FileStorage(BUCKET, endpoint_url=None, region=REGION)
    try:
        await storage.put(KEY, b"x", PDF)
        assert aws.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == b"x"
    finally:
        await storage.aclose()


async def test_make_storage_s3(aws: Any) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, storage_backend="s3", s3_bucket=BUCKET, s3_region=REGION
    )
    storage = make_storage(settings)
    try:
        assert isinstance(storage, S3FileStorage)
        assert storage.name == "s3"
        await storage.put(KEY, b"via settings", PDF)
        assert await storage.get(KEY) == b"via settings"
    finally:
        await storage.aclose()
