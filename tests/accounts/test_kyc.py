"""KYC documents: upload and status for users, review for admins, over local disk and S3."""

from __future__ import annotations

import asyncio
import hashlib
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from tests.conftest import TEST_BUCKET, TEST_REGION, CapturedLogs, serve_app
from tests.documents import JPEG, PDF, PNG, make_pdf
from tests.factories import bearer, make_api_key, make_user, sign_in
from tradeos.accounts import kyc
from tradeos.accounts.models import AuditEvent, KycDocument, Role, User
from tradeos.accounts.service import Principal
from tradeos.app import create_app
from tradeos.config import Settings
from tradeos.core.db import Database
from tradeos.core.errors import Conflict
from tradeos.core.storage import LocalFileStorage

UPLOAD = "/api/v1/auth/kyc/upload"
STATUS = "/api/v1/auth/kyc/status"
OWN_DOCUMENT = "/api/v1/auth/kyc/documents/{id}"
ADMIN_DOCUMENTS = "/api/v1/admin/kyc/documents"
ADMIN_DOCUMENT = "/api/v1/admin/kyc/documents/{id}"

# -- sample documents ------------------------------------------------------------------------


HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"
# The start of a Windows executable: "MZ", then the DOS stub.
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48 + b"PE\x00\x00"

# -- people and helpers ----------------------------------------------------------------------


@dataclass
class People:
    owner: User
    other: User
    admin: User
    owner_headers: dict[str, str]
    other_headers: dict[str, str]
    admin_headers: dict[str, str]


@pytest.fixture
async def people(session: AsyncSession, settings: Settings) -> People:
    owner = await make_user(session)
    other = await make_user(session)
    admin = await make_user(session, role=Role.ADMIN.value, tier="pro")  # pro: API access
    headers = [bearer(await sign_in(session, settings, user)) for user in (owner, other, admin)]
    await session.commit()
    return People(owner, other, admin, *headers)


async def upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    data: bytes = PDF,
    *,
    filename: str = "passport.pdf",
    document_type: str = "passport",
    declared_type: str = "application/pdf",
) -> httpx.Response:
    return await client.post(
        UPLOAD,
        headers=headers,
        data={"document_type": document_type},
        files={"file": (filename, data, declared_type)},
    )


async def uploaded(
    client: httpx.AsyncClient, headers: dict[str, str], data: bytes = PDF, **kwargs: Any
) -> int:
    response = await upload(client, headers, data, **kwargs)
    assert response.status_code == 201, response.text
    document_id: int = response.json()["id"]
    return document_id


# The test's session ends each read with a commit: on SQLite an open transaction here would
# hold the write lock the API's next request waits for.


async def documents_in_database(session: AsyncSession) -> list[KycDocument]:
    query = select(KycDocument).order_by(KycDocument.id).execution_options(populate_existing=True)
    documents = list(await session.scalars(query))
    await session.commit()
    return documents


async def kyc_status_of(session: AsyncSession, user: User) -> str:
    await session.refresh(user)
    await session.commit()
    return user.kyc_status


def stored_files(settings: Settings) -> list[Path]:
    assert settings.storage_dir is not None
    if not settings.storage_dir.exists():
        return []
    return [path for path in settings.storage_dir.rglob("*") if path.is_file()]


def problem_fields(response: httpx.Response) -> set[str]:
    assert response.headers["content-type"] == "application/problem+json"
    return {error["field"] for error in response.json().get("errors", [])}


# -- upload --------------------------------------------------------------------------------


@pytest.mark.parametrize("document_type", ["passport", "id_card", "proof_of_address", "selfie"])
async def test_each_document_type_is_accepted(
    client: httpx.AsyncClient, people: People, session: AsyncSession, document_type: str
) -> None:
    response = await upload(client, people.owner_headers, document_type=document_type)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["document_type"] == document_type
    assert body["status"] == "pending"
    assert body["review_reason"] is None and body["reviewed_at"] is None
    assert "storage_key" not in body and "sha256" not in body
    [document] = await documents_in_database(session)
    assert (document.id, document.document_type) == (body["id"], document_type)
    assert document.user_id == people.owner.id


@pytest.mark.parametrize(
    ("data", "filename", "declared_type", "expected"),
    [
        (PDF, "scan.pdf", "application/pdf", "application/pdf"),
        (PNG, "photo.png", "image/png", "image/png"),
        (JPEG, "photo.jpg", "image/jpeg", "image/jpeg"),
        # The name and the declared type are the client's claims; the content decides.
        (PNG, "passport.pdf", "application/pdf", "image/png"),
        (JPEG, "document", "application/octet-stream", "image/jpeg"),
        (PDF, "scan.png", "image/png", "application/pdf"),
    ],
    ids=["pdf", "png", "jpeg", "png-named-pdf", "jpeg-unnamed", "pdf-named-png"],
)
async def test_the_content_decides_the_type(
    client: httpx.AsyncClient,
    people: People,
    session: AsyncSession,
    data: bytes,
    filename: str,
    declared_type: str,
    expected: str,
) -> None:
    response = await upload(
        client, people.owner_headers, data, filename=filename, declared_type=declared_type
    )
    assert response.status_code == 201, response.text
    assert response.json()["content_type"] == expected
    assert response.json()["size_bytes"] == len(data)
    [document] = await documents_in_database(session)
    assert document.content_type == expected
    assert document.sha256 == hashlib.sha256(data).hexdigest()
    assert document.storage_key.endswith("." + kyc.EXTENSIONS[expected])

    download = await client.get(OWN_DOCUMENT.format(id=document.id), headers=people.owner_headers)
    assert download.status_code == 200
    assert download.content == data
    assert download.headers["content-type"] == expected


@pytest.mark.parametrize(
    ("data", "filename", "declared_type"),
    [
        (HTML, "passport.pdf", "application/pdf"),
        (EXE, "passport.pdf", "application/pdf"),
        (EXE, "selfie.png", "image/png"),
        (b"%PDF-1.4\n<script>", "truncated.pdf", "application/pdf"),  # no %%EOF: not whole
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "picture.png", "image/png"),
        (b"just some text", "notes.jpg", "image/jpeg"),
    ],
    ids=["html-named-pdf", "exe-named-pdf", "exe-named-png", "truncated-pdf", "gif", "text"],
)
async def test_other_content_is_refused_whatever_its_name(
    client: httpx.AsyncClient,
    people: People,
    session: AsyncSession,
    settings: Settings,
    data: bytes,
    filename: str,
    declared_type: str,
) -> None:
    response = await upload(
        client, people.owner_headers, data, filename=filename, declared_type=declared_type
    )
    assert response.status_code == 415, response.text
    assert problem_fields(response) == {"body.file"}
    assert await documents_in_database(session) == []
    assert stored_files(settings) == []
    assert await kyc_status_of(session, people.owner) == "none"


async def test_upload_at_the_limit_is_accepted_and_beyond_it_refused(
    settings_factory: Callable[..., Settings], database: Database, session: AsyncSession
) -> None:
    settings = settings_factory(kyc_max_upload_bytes=2048)
    owner = await make_user(session)
    headers = bearer(await sign_in(session, settings, owner))
    await session.commit()
    async with serve_app(create_app(settings, configure_logs=False)) as client:
        at_limit = await upload(client, headers, make_pdf(2048))
        assert at_limit.status_code == 201, at_limit.text
        assert at_limit.json()["size_bytes"] == 2048

        too_large = await upload(client, headers, make_pdf(2049))
    assert too_large.status_code == 413, too_large.text
    assert problem_fields(too_large) == {"body.file"}
    assert "2048 bytes" in too_large.json()["detail"]
    assert len(await documents_in_database(session)) == 1
    assert len(stored_files(settings)) == 1


async def test_default_limit_is_ten_megabytes(
    settings_factory: Callable[..., Settings], database: Database, session: AsyncSession
) -> None:
    # The request body limit is raised here so the endpoint's own limit is what answers.
    settings = settings_factory(max_request_body_bytes=12 * 1024 * 1024)
    assert settings.kyc_max_upload_bytes == 10 * 1024 * 1024
    owner = await make_user(session)
    headers = bearer(await sign_in(session, settings, owner))
    await session.commit()
    async with serve_app(create_app(settings, configure_logs=False)) as client:
        too_large = await upload(client, headers, make_pdf(10 * 1024 * 1024 + 1))
        assert too_large.status_code == 413, too_large.text
        assert problem_fields(too_large) == {"body.file"}
        at_limit = await upload(client, headers, make_pdf(10 * 1024 * 1024))
    assert at_limit.status_code == 201, at_limit.text
    assert [document.size_bytes for document in await documents_in_database(session)] == [
        10 * 1024 * 1024
    ]


async def test_an_empty_file_is_refused(
    client: httpx.AsyncClient, people: People, session: AsyncSession
) -> None:
    response = await upload(client, people.owner_headers, b"")
    assert response.status_code == 422, response.text
    assert problem_fields(response) == {"body.file"}
    assert await documents_in_database(session) == []


@pytest.mark.parametrize(
    ("form", "files", "field"),
    [
        ({"document_type": "passport"}, None, "body.file"),
        ({}, {"file": ("a.pdf", PDF, "application/pdf")}, "body.document_type"),
        (
            {"document_type": "visa"},
            {"file": ("a.pdf", PDF, "application/pdf")},
            "body.document_type",
        ),
        ({"document_type": ""}, {"file": ("a.pdf", PDF, "application/pdf")}, "body.document_type"),
    ],
    ids=["no-file", "no-type", "unknown-type", "empty-type"],
)
async def test_missing_or_invalid_fields_are_422(
    client: httpx.AsyncClient,
    people: People,
    session: AsyncSession,
    form: dict[str, str],
    files: dict[str, Any] | None,
    field: str,
) -> None:
    if files is None:
        # Still multipart, with a field other than `file`.
        files = {"other": ("a.pdf", PDF, "application/pdf")}
    response = await client.post(UPLOAD, headers=people.owner_headers, data=form, files=files)
    assert response.status_code == 422, response.text
    assert field in problem_fields(response)
    assert await documents_in_database(session) == []


async def test_upload_needs_credentials_with_the_trade_scope(
    client: httpx.AsyncClient, people: People, session: AsyncSession, settings: Settings
) -> None:
    assert (await upload(client, {})).status_code == 401
    _key, secret = await make_api_key(session, settings, people.owner, scopes=["read"])
    await session.commit()
    response = await upload(client, {"X-API-Key": secret})
    assert response.status_code == 403, response.text
    assert await documents_in_database(session) == []


async def test_the_client_file_name_is_kept_sanitized_and_never_used_as_the_key(
    client: httpx.AsyncClient, people: People, session: AsyncSession, settings: Settings
) -> None:
    # (httpx percent-encodes control characters in a multipart name; the unit test below
    # covers those.)
    hostile = "..\\../../etc/pass\u202ewd  scan  .pdf"
    response = await upload(client, people.owner_headers, filename=hostile)
    assert response.status_code == 201, response.text
    assert response.json()["original_filename"] == "passwd scan .pdf"
    [document] = await documents_in_database(session)
    assert "pass" not in document.storage_key and ".." not in document.storage_key
    assert document.storage_key.startswith(f"kyc/{people.owner.id}/")

    download = await client.get(OWN_DOCUMENT.format(id=document.id), headers=people.owner_headers)
    assert download.headers["content-disposition"] == (
        f'attachment; filename="kyc-document-{document.id}.pdf"'
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (None, None),
        ("", None),
        ("passport.pdf", "passport.pdf"),
        ("C:\\Users\\me\\scan.png", "scan.png"),
        ("/etc/passwd", "passwd"),
        ("a\u202egnp.exe", "agnp.exe"),  # right-to-left override removed
        ("  tabs\tand\nnewlines.pdf ", "tabs and newlines.pdf"),
        ("dir/", None),
        ("é" * 300, "é" * 255),
        ("e\u0301.pdf", "é.pdf"),  # NFC
    ],
)
def test_sanitize_filename(name: str | None, expected: str | None) -> None:
    assert kyc.sanitize_filename(name) == expected


# -- status and reading ----------------------------------------------------------------------


async def test_status_before_and_after_an_upload(
    client: httpx.AsyncClient, people: People, session: AsyncSession
) -> None:
    before = await client.get(STATUS, headers=people.owner_headers)
    assert before.status_code == 200
    assert before.json() == {"kyc_status": "none", "documents": []}

    first = await uploaded(client, people.owner_headers, document_type="passport")
    second = await uploaded(
        client, people.owner_headers, PNG, filename="bill.png", document_type="proof_of_address"
    )
    await uploaded(client, people.other_headers)  # someone else's: not listed

    after = await client.get(STATUS, headers=people.owner_headers)
    assert after.status_code == 200
    body = after.json()
    assert body["kyc_status"] == "pending"
    assert [document["id"] for document in body["documents"]] == [second, first]
    assert [document["status"] for document in body["documents"]] == ["pending", "pending"]
    assert body["documents"][0]["document_type"] == "proof_of_address"
    assert body["documents"][0]["original_filename"] == "bill.png"
    assert await kyc_status_of(session, people.owner) == "pending"


async def test_the_owner_downloads_a_document_as_an_attachment(
    client: httpx.AsyncClient, people: People
) -> None:
    document_id = await uploaded(client, people.owner_headers, PNG, filename="me.png")
    response = await client.get(OWN_DOCUMENT.format(id=document_id), headers=people.owner_headers)
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "no-store" in response.headers["cache-control"]


async def test_nobody_but_the_owner_and_admins_reads_a_document(
    client: httpx.AsyncClient, people: People
) -> None:
    document_id = await uploaded(client, people.owner_headers)

    # Another user: it does not exist for them, on the user route...
    foreign = await client.get(OWN_DOCUMENT.format(id=document_id), headers=people.other_headers)
    assert foreign.status_code == 404
    assert foreign.headers["content-type"] == "application/problem+json"
    missing = await client.get(
        OWN_DOCUMENT.format(id=document_id + 1000), headers=people.other_headers
    )
    assert missing.status_code == 404
    assert foreign.json()["detail"] == missing.json()["detail"]  # indistinguishable
    # ...and every admin route is forbidden to them.
    admin_requests = [
        ("GET", ADMIN_DOCUMENTS),
        ("GET", ADMIN_DOCUMENT.format(id=document_id)),
        ("GET", ADMIN_DOCUMENT.format(id=document_id) + "/file"),
        ("POST", ADMIN_DOCUMENT.format(id=document_id) + "/approve"),
    ]
    for method, url in admin_requests:
        response = await client.request(method, url, headers=people.other_headers)
        assert response.status_code == 403, (method, url, response.text)
    reject = await client.post(
        ADMIN_DOCUMENT.format(id=document_id) + "/reject",
        headers=people.other_headers,
        json={"reason": "I do not like it"},
    )
    assert reject.status_code == 403
    # Unauthenticated: 401.
    assert (await client.get(OWN_DOCUMENT.format(id=document_id))).status_code == 401

    # The admin reads it, through the admin route.
    file = await client.get(
        ADMIN_DOCUMENT.format(id=document_id) + "/file", headers=people.admin_headers
    )
    assert file.status_code == 200 and file.content == PDF
    assert file.headers["x-content-type-options"] == "nosniff"
    assert file.headers["content-disposition"].startswith("attachment;")
    status = await client.get(STATUS, headers=people.other_headers)
    assert status.json() == {"kyc_status": "none", "documents": []}


async def test_an_admin_api_key_without_the_admin_scope_cannot_read_others_documents(
    client: httpx.AsyncClient, people: People, session: AsyncSession, settings: Settings
) -> None:
    document_id = await uploaded(client, people.owner_headers)
    _key, secret = await make_api_key(session, settings, people.admin, scopes=["read"])
    await session.commit()
    response = await client.get(OWN_DOCUMENT.format(id=document_id), headers={"X-API-Key": secret})
    assert response.status_code == 404
    admin_route = await client.get(
        ADMIN_DOCUMENT.format(id=document_id) + "/file", headers={"X-API-Key": secret}
    )
    assert admin_route.status_code == 403


# -- review ----------------------------------------------------------------------------------


async def test_admin_lists_pending_documents_and_approves_one(
    client: httpx.AsyncClient, people: People, session: AsyncSession
) -> None:
    first = await uploaded(client, people.owner_headers)
    second = await uploaded(client, people.other_headers, PNG, document_type="selfie")

    listing = await client.get(ADMIN_DOCUMENTS, headers=people.admin_headers)
    assert listing.status_code == 200, listing.text
    page = listing.json()
    assert (page["total"], page["page"], page["pages"]) == (2, 1, 1)
    assert [item["id"] for item in page["items"]] == [first, second]  # oldest first
    assert page["items"][0]["user_id"] == people.owner.id
    assert page["items"][0]["sha256"] == hashlib.sha256(PDF).hexdigest()

    details = await client.get(ADMIN_DOCUMENT.format(id=first), headers=people.admin_headers)
    assert details.status_code == 200 and details.json()["status"] == "pending"

    approved = await client.post(
        ADMIN_DOCUMENT.format(id=first) + "/approve", headers=people.admin_headers
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert approved.json()["reviewer_id"] == people.admin.id
    assert approved.json()["reviewed_at"] is not None

    assert await kyc_status_of(session, people.owner) == "approved"
    assert await kyc_status_of(session, people.other) == "pending"
    status = (await client.get(STATUS, headers=people.owner_headers)).json()
    assert status["kyc_status"] == "approved"
    assert status["documents"][0]["status"] == "approved"

    pending = (await client.get(ADMIN_DOCUMENTS, headers=people.admin_headers)).json()
    assert [item["id"] for item in pending["items"]] == [second]
    done = (
        await client.get(
            ADMIN_DOCUMENTS, params={"status": "approved"}, headers=people.admin_headers
        )
    ).json()
    assert [item["id"] for item in done["items"]] == [first]


async def test_admin_list_filters_sorts_and_pages(
    client: httpx.AsyncClient, people: People
) -> None:
    passport = await uploaded(client, people.owner_headers, document_type="passport")
    selfie = await uploaded(client, people.owner_headers, PNG, document_type="selfie")
    foreign = await uploaded(client, people.other_headers, document_type="passport")
    await client.post(ADMIN_DOCUMENT.format(id=selfie) + "/approve", headers=people.admin_headers)

    async def ids(**params: Any) -> list[int]:
        response = await client.get(ADMIN_DOCUMENTS, params=params, headers=people.admin_headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await ids() == [passport, foreign]
    assert await ids(status="all") == [passport, selfie, foreign]
    assert await ids(status="all", sort="-created") == [foreign, selfie, passport]
    assert await ids(status="all", user_id=people.owner.id) == [passport, selfie]
    assert await ids(status="all", document_type="passport") == [passport, foreign]
    assert await ids(document_type="selfie") == []
    assert await ids(status="all", size=1, page=2) == [selfie]

    for bad in ({"sort": "size"}, {"status": "none"}, {"document_type": "visa"}):
        response = await client.get(ADMIN_DOCUMENTS, params=bad, headers=people.admin_headers)
        assert response.status_code == 422, bad


async def test_rejection_with_a_reason_is_visible_to_the_owner(
    client: httpx.AsyncClient, people: People, session: AsyncSession
) -> None:
    document_id = await uploaded(client, people.owner_headers)
    url = ADMIN_DOCUMENT.format(id=document_id) + "/reject"

    for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 501}):
        refused = await client.post(url, headers=people.admin_headers, json=body)
        assert refused.status_code == 422, body
        assert "body.reason" in problem_fields(refused)
    assert await kyc_status_of(session, people.owner) == "pending"

    reason = "The photo is blurred; upload a sharper scan."
    rejected = await client.post(url, headers=people.admin_headers, json={"reason": f" {reason} "})
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["review_reason"] == reason

    assert await kyc_status_of(session, people.owner) == "rejected"
    status = (await client.get(STATUS, headers=people.owner_headers)).json()
    assert status["kyc_status"] == "rejected"
    [document] = status["documents"]
    assert (document["status"], document["review_reason"]) == ("rejected", reason)
    assert document["reviewed_at"] is not None

    # A new upload puts the user back in the queue.
    await uploaded(client, people.owner_headers)
    assert await kyc_status_of(session, people.owner) == "pending"


@pytest.mark.parametrize(
    ("first", "second"),
    [("approve", "approve"), ("approve", "reject"), ("reject", "approve"), ("reject", "reject")],
)
async def test_a_document_is_decided_once(
    client: httpx.AsyncClient, people: People, session: AsyncSession, first: str, second: str
) -> None:
    document_id = await uploaded(client, people.owner_headers)

    async def decide(action: str) -> httpx.Response:
        return await client.post(
            ADMIN_DOCUMENT.format(id=document_id) + f"/{action}",
            headers=people.admin_headers,
            json={"reason": "unreadable"} if action == "reject" else None,
        )

    assert (await decide(first)).status_code == 200
    again = await decide(second)
    assert again.status_code == 409, again.text
    assert again.headers["content-type"] == "application/problem+json"
    expected = "approved" if first == "approve" else "rejected"
    [document] = await documents_in_database(session)
    assert document.status == expected
    assert await kyc_status_of(session, people.owner) == expected


async def test_deciding_a_missing_document_is_404(
    client: httpx.AsyncClient, people: People
) -> None:
    response = await client.post(
        ADMIN_DOCUMENT.format(id=999) + "/approve", headers=people.admin_headers
    )
    assert response.status_code == 404
    response = await client.get(ADMIN_DOCUMENT.format(id=999), headers=people.admin_headers)
    assert response.status_code == 404


async def test_an_admin_does_not_review_their_own_document(
    client: httpx.AsyncClient, people: People, session: AsyncSession, settings: Settings
) -> None:
    document_id = await uploaded(client, people.admin_headers)
    response = await client.post(
        ADMIN_DOCUMENT.format(id=document_id) + "/approve", headers=people.admin_headers
    )
    assert response.status_code == 403, response.text
    assert await kyc_status_of(session, people.admin) == "pending"

    colleague = await make_user(session, role=Role.ADMIN.value)
    colleague_headers = bearer(await sign_in(session, settings, colleague))
    await session.commit()
    response = await client.post(
        ADMIN_DOCUMENT.format(id=document_id) + "/approve", headers=colleague_headers
    )
    assert response.status_code == 200, response.text
    assert await kyc_status_of(session, people.admin) == "approved"


async def test_an_approved_user_stays_approved(
    client: httpx.AsyncClient, people: People, session: AsyncSession
) -> None:
    first = await uploaded(client, people.owner_headers)
    await client.post(ADMIN_DOCUMENT.format(id=first) + "/approve", headers=people.admin_headers)
    extra = await uploaded(client, people.owner_headers, document_type="proof_of_address")
    assert await kyc_status_of(session, people.owner) == "approved"  # not back to pending

    rejected = await client.post(
        ADMIN_DOCUMENT.format(id=extra) + "/reject",
        headers=people.admin_headers,
        json={"reason": "That is not a utility bill."},
    )
    assert rejected.status_code == 200
    assert await kyc_status_of(session, people.owner) == "approved"
    status = (await client.get(STATUS, headers=people.owner_headers)).json()
    assert [document["status"] for document in status["documents"]] == ["rejected", "approved"]


async def test_pending_documents_per_user_are_capped(
    client: httpx.AsyncClient, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kyc, "MAX_PENDING_DOCUMENTS", 2)
    first = await uploaded(client, people.owner_headers)
    await uploaded(client, people.owner_headers)
    refused = await upload(client, people.owner_headers)
    assert refused.status_code == 409, refused.text
    # A decision frees a slot.
    await client.post(ADMIN_DOCUMENT.format(id=first) + "/approve", headers=people.admin_headers)
    assert (await upload(client, people.owner_headers)).status_code == 201


async def test_uploads_and_decisions_are_audited(
    client: httpx.AsyncClient, people: People, session: AsyncSession
) -> None:
    approved = await uploaded(client, people.owner_headers)
    rejected = await uploaded(client, people.owner_headers, PNG, document_type="selfie")
    await client.post(ADMIN_DOCUMENT.format(id=approved) + "/approve", headers=people.admin_headers)
    await client.post(
        ADMIN_DOCUMENT.format(id=rejected) + "/reject",
        headers=people.admin_headers,
        json={"reason": "Face not visible."},
    )

    events = list(
        await session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action.like("kyc_%"))
            .order_by(AuditEvent.id)
            .execution_options(populate_existing=True)
        )
    )
    summary = [(event.action, event.actor_id, event.target_user_id) for event in events]
    owner, admin = people.owner.id, people.admin.id
    assert summary == [
        ("kyc_uploaded", owner, owner),
        ("kyc_uploaded", owner, owner),
        ("kyc_approved", admin, owner),
        ("kyc_rejected", admin, owner),
    ]
    assert events[0].details["document_id"] == approved
    assert events[1].details["document_type"] == "selfie"
    assert events[1].details["content_type"] == "image/png"
    assert events[2].details == {"document_id": approved, "document_type": "passport"}
    assert events[3].details == {
        "document_id": rejected,
        "document_type": "selfie",
        "reason": "Face not visible.",
    }


async def test_refused_uploads_write_no_audit_row(
    client: httpx.AsyncClient, people: People, session: AsyncSession
) -> None:
    assert (await upload(client, people.owner_headers, HTML)).status_code == 415
    count = await session.scalar(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "kyc_uploaded")
    )
    assert count == 0


# -- storage ---------------------------------------------------------------------------------


async def test_local_files_live_under_the_storage_directory_only(
    client: httpx.AsyncClient,
    app: FastAPI,
    people: People,
    session: AsyncSession,
    settings: Settings,
) -> None:
    await uploaded(client, people.owner_headers, PNG, filename="passport.png")
    [document] = await documents_in_database(session)
    assert settings.storage_dir is not None
    path = settings.storage_dir / document.storage_key
    assert stored_files(settings) == [path]
    assert path.read_bytes() == PNG
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Nothing serves files straight from disk: no static mount anywhere, let alone over it.
    mounts = [route for route in app.routes if isinstance(route, Mount)]
    assert not any(isinstance(mount.app, StaticFiles) for mount in mounts)
    for url in (f"/{document.storage_key}", f"/api/v1/{document.storage_key}", "/files/kyc"):
        assert (await client.get(url, headers=people.owner_headers)).status_code == 404


@pytest.fixture
async def s3_client(
    aws: Any, settings_factory: Callable[..., Settings], database: Database
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    settings = settings_factory(storage_backend="s3", s3_bucket=TEST_BUCKET, s3_region=TEST_REGION)
    async with serve_app(create_app(settings, configure_logs=False)) as client:
        yield client, settings


async def test_with_s3_an_upload_lands_in_the_bucket_and_reads_back(
    aws: Any, s3_client: tuple[httpx.AsyncClient, Settings], session: AsyncSession
) -> None:
    client, settings = s3_client
    owner = await make_user(session)
    admin = await make_user(session, role=Role.ADMIN.value)
    owner_headers = bearer(await sign_in(session, settings, owner))
    admin_headers = bearer(await sign_in(session, settings, admin))
    await session.commit()

    document_id = await uploaded(client, owner_headers, JPEG, filename="selfie.jpg")
    [document] = await documents_in_database(session)
    stored = aws.get_object(Bucket=TEST_BUCKET, Key=document.storage_key)
    assert stored["Body"].read() == JPEG
    assert stored["ContentType"] == "image/jpeg"
    assert stored["ServerSideEncryption"] == "AES256"
    assert stored_files(settings) == []  # nothing on the local disk

    own = await client.get(OWN_DOCUMENT.format(id=document_id), headers=owner_headers)
    assert own.status_code == 200 and own.content == JPEG
    assert own.headers["content-type"] == "image/jpeg"
    reviewed = await client.get(
        ADMIN_DOCUMENT.format(id=document_id) + "/file", headers=admin_headers
    )
    assert reviewed.status_code == 200 and reviewed.content == JPEG


async def test_a_row_whose_file_is_gone_is_a_logged_server_error(
    client: httpx.AsyncClient, people: People, session: AsyncSession, settings: Settings
) -> None:
    document_id = await uploaded(client, people.owner_headers)
    [path] = stored_files(settings)
    path.unlink()
    response = await client.get(OWN_DOCUMENT.format(id=document_id), headers=people.owner_headers)
    assert response.status_code == 500
    [document] = await documents_in_database(session)
    assert document.storage_key not in response.text


# -- the unit of work and the stored file ----------------------------------------------------


class FakeUpload:
    def __init__(self, data: bytes, filename: str | None = "scan.pdf") -> None:
        self.data = data
        self.filename = filename

    async def read(self, size: int = -1) -> bytes:
        return self.data if size < 0 else self.data[:size]


def principal_of(user: User) -> Principal:
    return Principal(
        user_id=user.id,
        username=user.username,
        role=user.role,
        tier=user.tier,
        scopes=frozenset({"read", "trade"}),
    )


class ObservedStorage:
    """A storage that wraps another: counts what was stored and deleted, can fail deletes."""

    def __init__(self, inner: LocalFileStorage, *, delete_fails: bool = False) -> None:
        self.inner = inner
        self.name = inner.name
        self.delete_fails = delete_fails
        self.put_keys: list[str] = []
        self.deleted_keys: list[str] = []

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        self.put_keys.append(key)
        await self.inner.put(key, data, content_type)

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    async def delete(self, key: str) -> None:
        self.deleted_keys.append(key)
        if self.delete_fails:
            raise OSError("storage unreachable")
        await self.inner.delete(key)

    async def exists(self, key: str) -> bool:
        return await self.inner.exists(key)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def count_documents(database: Database) -> int:
    async with database.session(write=False) as session:
        return await session.scalar(select(func.count()).select_from(KycDocument)) or 0


async def test_an_upload_refused_by_the_database_deletes_its_stored_file(
    database: Database,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kyc, "MAX_PENDING_DOCUMENTS", 1)
    storage = ObservedStorage(LocalFileStorage(tmp_path / "files"))
    async with database.session() as session:
        user = await make_user(session)
    principal = principal_of(user)

    async def upload_one() -> KycDocument:
        return await kyc.upload_document(
            database, storage, settings, principal, document_type="passport", file=FakeUpload(PDF)
        )

    kept = await upload_one()
    with pytest.raises(Conflict):
        await upload_one()  # over the cap: the file was stored first, then the row refused
    refused_key = storage.put_keys[-1]
    assert storage.deleted_keys == [refused_key]
    assert not await storage.exists(refused_key)
    assert await storage.exists(kept.storage_key)
    assert await count_documents(database) == 1


async def test_a_file_that_cannot_be_deleted_either_is_logged_as_an_orphan(
    database: Database,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    captured_logs: CapturedLogs,
) -> None:
    def broken_audit(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("audit table gone")

    monkeypatch.setattr(kyc, "record_audit", broken_audit)
    storage = ObservedStorage(LocalFileStorage(tmp_path / "files"), delete_fails=True)
    async with database.session() as session:
        user = await make_user(session)
    with pytest.raises(RuntimeError, match="audit table gone"):
        await kyc.upload_document(
            database,
            storage,
            settings,
            principal_of(user),
            document_type="passport",
            file=FakeUpload(PDF),
        )
    [key] = storage.put_keys
    assert storage.deleted_keys == [key]
    [orphan] = captured_logs.events("kyc_orphan_file")
    assert orphan["key"] == key
    assert await count_documents(database) == 0


async def test_a_failed_unit_of_work_after_the_put_leaves_no_file(
    client: httpx.AsyncClient,
    app: FastAPI,
    people: People,
    session: AsyncSession,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored: list[str] = []
    real_put = app.state.storage.put

    async def recording_put(key: str, data: bytes, content_type: str) -> None:
        stored.append(key)
        await real_put(key, data, content_type)

    def broken_audit(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("audit table gone")

    monkeypatch.setattr(app.state.storage, "put", recording_put)
    monkeypatch.setattr(kyc, "record_audit", broken_audit)
    response = await upload(client, people.owner_headers)
    assert response.status_code == 500
    assert len(stored) == 1  # the file was stored before the unit of work...
    assert stored_files(settings) == []  # ...and deleted when it failed
    assert await documents_in_database(session) == []
    assert await kyc_status_of(session, people.owner) == "none"


@pytest.mark.parametrize("operation", ["upload", "download", "admin download"])
async def test_slow_storage_does_not_hold_up_other_requests(
    client: httpx.AsyncClient,
    app: FastAPI,
    people: People,
    monkeypatch: pytest.MonkeyPatch,
    operation: str,
) -> None:
    # On SQLite a process has one connection: a unit of work held across the storage call
    # would make every other request wait for it.
    document_id = await uploaded(client, people.owner_headers)
    storage = app.state.storage
    real_put, real_get = storage.put, storage.get
    in_storage = asyncio.Event()

    async def slow_put(key: str, data: bytes, content_type: str) -> None:
        in_storage.set()
        await asyncio.sleep(1)
        await real_put(key, data, content_type)

    async def slow_get(key: str) -> bytes:
        in_storage.set()
        await asyncio.sleep(1)
        return await real_get(key)

    monkeypatch.setattr(storage, "put", slow_put)
    monkeypatch.setattr(storage, "get", slow_get)
    finished: dict[str, float] = {}

    async def timed(name: str, request: Awaitable[httpx.Response]) -> httpx.Response:
        response = await request
        finished[name] = time.monotonic()
        return response

    if operation == "upload":
        slow = upload(client, people.owner_headers)
    elif operation == "download":
        slow = client.get(OWN_DOCUMENT.format(id=document_id), headers=people.owner_headers)
    else:
        slow = client.get(
            ADMIN_DOCUMENT.format(id=document_id) + "/file", headers=people.admin_headers
        )

    async def someone_else() -> httpx.Response:
        await asyncio.wait_for(in_storage.wait(), timeout=10)
        return await timed("other", client.get("/api/v1/users/me", headers=people.other_headers))

    slow_response, other_response = await asyncio.gather(timed("slow", slow), someone_else())
    assert slow_response.status_code in (200, 201), slow_response.text
    assert other_response.status_code == 200, other_response.text
    assert finished["other"] < finished["slow"]


async def test_parallel_uploads_cannot_pass_the_pending_cap(
    client: httpx.AsyncClient,
    app: FastAPI,
    people: People,
    session: AsyncSession,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kyc, "MAX_PENDING_DOCUMENTS", 2)
    uploads = 5
    real_put = app.state.storage.put
    started = 0
    all_started = asyncio.Event()

    async def gathering_put(key: str, data: bytes, content_type: str) -> None:
        # Every upload stores its file before any records it: all five then race for the
        # last free slots at once.
        nonlocal started
        started += 1
        if started == uploads:
            all_started.set()
        await asyncio.wait_for(all_started.wait(), timeout=10)
        await real_put(key, data, content_type)

    monkeypatch.setattr(app.state.storage, "put", gathering_put)
    responses = await asyncio.gather(
        *(upload(client, people.owner_headers) for _ in range(uploads))
    )
    assert sorted(response.status_code for response in responses) == [201, 201, 409, 409, 409]
    documents = await documents_in_database(session)
    assert sorted(document.id for document in documents) == sorted(
        response.json()["id"] for response in responses if response.status_code == 201
    )
    assert settings.storage_dir is not None
    assert sorted(stored_files(settings)) == sorted(
        settings.storage_dir / document.storage_key for document in documents
    )


async def test_a_failed_put_leaves_no_row(
    client: httpx.AsyncClient,
    app: FastAPI,
    people: People,
    session: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken_put(key: str, data: bytes, content_type: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(app.state.storage, "put", broken_put)
    response = await upload(client, people.owner_headers)
    assert response.status_code == 500
    assert await documents_in_database(session) == []
    assert await kyc_status_of(session, people.owner) == "none"


async def test_two_admins_deciding_at_once_one_wins(
    client: httpx.AsyncClient, people: People, session: AsyncSession, settings: Settings
) -> None:
    document_id = await uploaded(client, people.owner_headers)
    colleague = await make_user(session, role=Role.ADMIN.value)
    colleague_headers = bearer(await sign_in(session, settings, colleague))
    await session.commit()
    url = ADMIN_DOCUMENT.format(id=document_id)
    approve, reject = await asyncio.gather(
        client.post(url + "/approve", headers=people.admin_headers),
        client.post(url + "/reject", headers=colleague_headers, json={"reason": "Expired."}),
    )
    assert sorted([approve.status_code, reject.status_code]) == [200, 409]
    winner = "approved" if approve.status_code == 200 else "rejected"
    [document] = await documents_in_database(session)
    assert document.status == winner
    assert await kyc_status_of(session, people.owner) == winner
    decisions = await session.scalar(
        select(func.count())
        .select_from(AuditEvent)
        .where(AuditEvent.action.in_(["kyc_approved", "kyc_rejected"]))
    )
    assert decisions == 1


# -- the owner hears of the decision ---------------------------------------------------------


async def test_the_owner_is_notified_of_each_decision_once_it_is_committed(
    app: FastAPI, client: httpx.AsyncClient, people: People
) -> None:
    approved_id = await uploaded(client, people.owner_headers)
    rejected_id = await uploaded(client, people.owner_headers, PNG, document_type="selfie")
    channel = f"user:{people.owner.id}:notifications"
    async with app.state.events.subscribe(channel) as subscription:
        approve = await client.post(
            ADMIN_DOCUMENT.format(id=approved_id) + "/approve", headers=people.admin_headers
        )
        assert approve.status_code == 200
        event = await subscription.get(timeout=2)
        assert event is not None and event.payload["type"] == "kyc.approved"
        reject = await client.post(
            ADMIN_DOCUMENT.format(id=rejected_id) + "/reject",
            headers=people.admin_headers,
            json={"reason": "The photo is blurred."},
        )
        assert reject.status_code == 200
        event = await subscription.get(timeout=2)
        assert event is not None and event.payload["type"] == "kyc.rejected"
        assert event.payload["body"] == "The photo is blurred."
    listed = await client.get("/api/v1/notifications", headers=people.owner_headers)
    assert [item["type"] for item in listed.json()["items"]] == ["kyc.rejected", "kyc.approved"]
    # A decision that fails (decided twice) tells nobody anything.
    again = await client.post(
        ADMIN_DOCUMENT.format(id=approved_id) + "/approve", headers=people.admin_headers
    )
    assert again.status_code == 409
    listed = await client.get("/api/v1/notifications", headers=people.owner_headers)
    assert listed.json()["total"] == 2
