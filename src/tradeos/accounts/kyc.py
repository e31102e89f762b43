"""KYC use cases: users upload identity documents, admins review them.

A document's bytes live in the file storage port (a private local directory or an S3 bucket);
its row in `kyc_documents` holds what we know about it: the type the user declared, the type
its content really is (sniffed, never taken from the name or the claimed Content-Type), its
size and SHA-256, and the review. The storage key is made of the owner's id and a random
token, never of anything the client sent.

Never a unit of work across storage I/O, and why: on the embedded backend each process has
one database connection (core.db), and a unit of work holds it until it ends; every other
request of the process waits meanwhile, and answers 503 after ten seconds. Storing or
fetching a file can be slow (up to 10 MB, over the network with S3), so the functions that
touch the storage open their own short units of work around it instead of taking the
request's session, and their endpoints authenticate in a unit of work of their own too.

Upload order: the content is read (bounded), checked and hashed first: nothing is stored
for a refused file. Then the bytes are stored under a fresh random key, with no unit of work
open. Then one short unit of work locks the owner's row (so that parallel uploads on
PostgreSQL count the pending documents one after another and cannot pass the cap together;
SQLite's BEGIN IMMEDIATE serializes them anyway), checks the cap, inserts the row, sets the
owner's KYC status and writes the audit row. If that unit of work fails, whatever the reason
(the cap, a constraint, the commit, a cancelled request), or the put itself fails (it may
have stored the object all the same), the object is deleted, shielded from cancellation,
and the error goes on. Should even the deletion fail (storage unreachable), the orphan is
logged (`kyc_orphan_file`): unreferenced, under an unguessable key, never served, harmless.
So a row never points at a file that was not stored.

Download order: the row is read, and who may read it checked, in a short read-only unit of
work, which is closed before the bytes are fetched.

`upload_document` and `read_document` therefore take the `Database`; the other functions
work in the request's session and, like the other services, flush: the request boundary
commits.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from typing import Any, Protocol

import anyio
import anyio.to_thread
import structlog
from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.accounts.kyc_schemas import REVIEW_REASON_MAX_LENGTH
from tradeos.accounts.models import KycDocument, KycDocumentType, KycStatus, User
from tradeos.accounts.service import Audit, ClientInfo, Principal, get_user, record_audit
from tradeos.config import Settings
from tradeos.core.db import Database, utcnow
from tradeos.core.errors import (
    Conflict,
    Forbidden,
    InternalError,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from tradeos.core.events import EventBus
from tradeos.core.filetypes import JPEG, PDF, PNG, sniff_document_type
from tradeos.core.pagination import Ordering, Sorting
from tradeos.core.storage import FileStorage
from tradeos.notifications.service import notify

logger = structlog.get_logger("tradeos.kyc")

# Pending documents one user may have at once: uploads are up to 10 MB each, and a queue
# that only grows would fill the storage.
MAX_PENDING_DOCUMENTS = 20
ORIGINAL_FILENAME_MAX_LENGTH = 255
EXTENSIONS = {PDF: "pdf", JPEG: "jpg", PNG: "png"}

# The admin queue: oldest first by default, so documents are reviewed in the order they came.
DOCUMENT_SORT = Sorting(
    {"created": KycDocument.created_at}, default="created", tie_breaker=KycDocument.id
)

_FILE_FIELD = "body.file"


class UploadedFile(Protocol):
    """What an upload gives us: a name the client chose, and the bytes (starlette's UploadFile)."""

    filename: str | None

    async def read(self, size: int = -1) -> bytes: ...


# -- upload --------------------------------------------------------------------------------


async def upload_document(
    database: Database,
    storage: FileStorage,
    settings: Settings,
    principal: Principal,
    *,
    document_type: KycDocumentType | str,
    file: UploadedFile,
    client: ClientInfo | None = None,
) -> KycDocument:
    """Check, store and record one document; the user's KYC status becomes pending (unless
    already approved: a further document does not undo an approval).

    Call it with no unit of work open: it stores the file first, then records it in a unit
    of work of its own (see the module's docstring)."""
    kind = _document_type(document_type)
    data = await _read_limited(file, settings.kyc_max_upload_bytes)
    content_type, digest = await anyio.to_thread.run_sync(_inspect, data)
    if content_type is None:
        raise UnsupportedMediaType(
            "The file must be a PDF, JPEG or PNG document; its content is none of these "
            "(the content decides, not the file name).",
            errors=[
                {
                    "field": _FILE_FIELD,
                    "message": "content is not a PDF, JPEG or PNG document",
                    "type": "unsupported_type",
                }
            ],
        )

    key = f"kyc/{principal.user_id}/{secrets.token_hex(16)}.{EXTENSIONS[content_type]}"
    try:
        await storage.put(key, data, content_type)
        async with database.session() as session:
            return await _record_upload(
                session,
                principal,
                kind,
                key=key,
                content_type=content_type,
                size_bytes=len(data),
                sha256=digest,
                filename=file.filename,
                client=client,
            )
    except BaseException:
        # Nothing refers to the key: the unit of work rolled back, or the put failed (and
        # may have stored the object all the same, a timeout say).
        await _delete_orphan(storage, key)
        raise


async def _record_upload(
    session: AsyncSession,
    principal: Principal,
    kind: KycDocumentType,
    *,
    key: str,
    content_type: str,
    size_bytes: int,
    sha256: str,
    filename: str | None,
    client: ClientInfo | None,
) -> KycDocument:
    # The owner's row is locked first: parallel uploads of one user wait here for each
    # other, so each counts the pending documents the previous ones inserted.
    owner_id = await session.scalar(
        select(User.id).where(User.id == principal.user_id).with_for_update()
    )
    if owner_id is None:
        raise NotFound("No such user.")
    user = await get_user(session, owner_id)
    pending = await session.scalar(
        select(func.count())
        .select_from(KycDocument)
        .where(KycDocument.user_id == user.id, KycDocument.status == KycStatus.PENDING.value)
    )
    if (pending or 0) >= MAX_PENDING_DOCUMENTS:
        raise Conflict(
            f"You already have {MAX_PENDING_DOCUMENTS} documents awaiting review; "
            "wait for a decision before uploading more."
        )

    document = KycDocument(
        user_id=user.id,
        document_type=kind.value,
        content_type=content_type,
        size_bytes=size_bytes,
        sha256=sha256,
        storage_key=key,
        original_filename=sanitize_filename(filename),
        status=KycStatus.PENDING.value,
    )
    session.add(document)
    if user.kyc_status != KycStatus.APPROVED.value:
        user.kyc_status = KycStatus.PENDING.value
    await session.flush()
    record_audit(
        session,
        Audit.KYC_UPLOADED,
        actor_id=user.id,
        target_user_id=user.id,
        ip=client.ip if client else None,
        document_id=document.id,
        document_type=kind.value,
        content_type=content_type,
        size_bytes=size_bytes,
    )
    await session.flush()
    return document


async def _delete_orphan(storage: FileStorage, key: str) -> None:
    """Best effort: delete a stored object nothing refers to; log it if that fails too."""
    # Shielded: a cancelled request (the client went away) must still clean up.
    with anyio.CancelScope(shield=True):
        try:
            await storage.delete(key)
        except Exception:
            logger.warning("kyc_orphan_file", storage=storage.name, key=key, exc_info=True)


def _document_type(value: KycDocumentType | str) -> KycDocumentType:
    try:
        return KycDocumentType(value)
    except ValueError:
        allowed = ", ".join(kind.value for kind in KycDocumentType)
        raise ValidationFailed(
            f"Unknown document type {value!r}.",
            errors=[
                {
                    "field": "body.document_type",
                    "message": f"must be one of: {allowed}",
                    "type": "enum",
                }
            ],
        ) from None


async def _read_limited(file: UploadedFile, limit: int) -> bytes:
    # One byte more than allowed is enough to know it is too much.
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(
            f"The file exceeds the limit of {limit} bytes.",
            errors=[
                {"field": _FILE_FIELD, "message": f"at most {limit} bytes", "type": "too_large"}
            ],
        )
    if not data:
        raise ValidationFailed(
            "The file is empty.",
            errors=[{"field": _FILE_FIELD, "message": "the file is empty", "type": "empty"}],
        )
    return data


def _inspect(data: bytes) -> tuple[str | None, str]:
    """The sniffed content type and the SHA-256; run in a thread (10 MB take a while)."""
    return sniff_document_type(data), hashlib.sha256(data).hexdigest()


_PATH_SEPARATORS = re.compile(r"[/\\]")


def sanitize_filename(name: str | None) -> str | None:
    """The client's file name, kept for display only: its last path segment, without control
    or formatting characters (bidi overrides), whitespace collapsed, at most 255 characters."""
    if not name:
        return None
    name = _PATH_SEPARATORS.split(unicodedata.normalize("NFC", name))[-1]
    # Whitespace controls (tab, newline) become spaces; other controls and formats go.
    name = "".join(
        " " if char.isspace() else char
        for char in name
        if char.isspace() or unicodedata.category(char)[0] != "C"
    )
    name = " ".join(name.split())
    return name[:ORIGINAL_FILENAME_MAX_LENGTH] or None


# -- reading -------------------------------------------------------------------------------


async def kyc_status(session: AsyncSession, principal: Principal) -> tuple[str, list[KycDocument]]:
    """The user's KYC status and their documents, newest first."""
    user = await get_user(session, principal.user_id)
    documents = await session.scalars(
        select(KycDocument)
        .where(KycDocument.user_id == user.id)
        .order_by(KycDocument.created_at.desc(), KycDocument.id.desc())
    )
    return user.kyc_status, list(documents)


def _may_read(principal: Principal, document: KycDocument) -> bool:
    # An admin reads through credentials that carry the admin scope (a read-only API key of
    # an admin does not).
    return document.user_id == principal.user_id or (
        principal.is_admin and "admin" in principal.scopes
    )


async def get_document(
    session: AsyncSession, principal: Principal, document_id: int
) -> KycDocument:
    """The document, for its owner or an admin; anyone else is told it does not exist."""
    document = await session.get(KycDocument, document_id)
    if document is None or not _may_read(principal, document):
        raise NotFound("No such KYC document.")
    return document


async def read_document(
    database: Database, storage: FileStorage, principal: Principal, document_id: int
) -> tuple[KycDocument, bytes]:
    """The document and its bytes, for its owner or an admin.

    Call it with no unit of work open: the row is read in a short one of its own, which is
    closed before the bytes are fetched."""
    async with database.session(write=False) as session:
        document = await get_document(session, principal, document_id)
    try:
        data = await storage.get(document.storage_key)
    except NotFound:
        # A row without its file is our fault, not the client's; and the key stays private.
        logger.error("kyc_file_missing", document_id=document.id, storage=storage.name)
        raise InternalError("The document's file cannot be read; this has been logged.") from None
    return document, data


def download_filename(document: KycDocument) -> str:
    """The name a download is saved under: ours, not the uploader's (it is only displayed)."""
    extension = EXTENSIONS.get(document.content_type, "bin")
    return f"kyc-document-{document.id}.{extension}"


def documents_query(
    *,
    status: str | None = KycStatus.PENDING.value,
    user_id: int | None = None,
    document_type: KycDocumentType | str | None = None,
    ordering: Ordering | None = None,
) -> Select[Any]:
    """The admin review list: pending documents by default (`status=None`: every status)."""
    query = select(KycDocument)
    if status is not None:
        query = query.where(KycDocument.status == status)
    if user_id is not None:
        query = query.where(KycDocument.user_id == user_id)
    if document_type is not None:
        query = query.where(KycDocument.document_type == _document_type(document_type).value)
    ordering = ordering or DOCUMENT_SORT.parse(DOCUMENT_SORT.default)
    return query.order_by(*ordering.clauses)


# -- review --------------------------------------------------------------------------------


async def approve_document(
    session: AsyncSession,
    events: EventBus,
    principal: Principal,
    document_id: int,
    *,
    client: ClientInfo | None = None,
) -> KycDocument:
    """Approve a pending document; its owner's KYC status becomes approved."""
    return await _decide(session, events, principal, document_id, KycStatus.APPROVED, None, client)


async def reject_document(
    session: AsyncSession,
    events: EventBus,
    principal: Principal,
    document_id: int,
    *,
    reason: str,
    client: ClientInfo | None = None,
) -> KycDocument:
    """Reject a pending document with a reason the owner will read; their KYC status becomes
    rejected, unless they are approved already (one bad extra document does not revoke an
    approval)."""
    reason = reason.strip()
    if not 1 <= len(reason) <= REVIEW_REASON_MAX_LENGTH:
        raise ValidationFailed(
            f"A rejection needs a reason of 1 to {REVIEW_REASON_MAX_LENGTH} characters.",
            errors=[
                {
                    "field": "body.reason",
                    "message": f"1 to {REVIEW_REASON_MAX_LENGTH} characters",
                    "type": "string_length",
                }
            ],
        )
    return await _decide(
        session, events, principal, document_id, KycStatus.REJECTED, reason, client
    )


async def _decide(
    session: AsyncSession,
    events: EventBus,
    principal: Principal,
    document_id: int,
    decision: KycStatus,
    reason: str | None,
    client: ClientInfo | None,
) -> KycDocument:
    """Record an admin's decision on a pending document, set its owner's KYC status, and
    notify the owner (`kyc.approved` / `kyc.rejected`, with the reason), which reaches them
    once the decision is committed."""
    if not principal.is_admin:
        raise Forbidden("Only administrators may review KYC documents.")
    document = await session.get(KycDocument, document_id)
    if document is None:
        raise NotFound("No such KYC document.")
    if document.user_id == principal.user_id:
        raise Forbidden("Another administrator must review your own documents.")
    _ensure_pending(document.status)
    # Conditional on still being pending, so two reviewers deciding at once cannot both win.
    result: Any = await session.execute(
        update(KycDocument)
        .where(KycDocument.id == document.id, KycDocument.status == KycStatus.PENDING.value)
        .values(
            status=decision.value,
            reviewer_id=principal.user_id,
            review_reason=reason,
            reviewed_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise Conflict("Another administrator decided this document meanwhile.")
    await session.refresh(document)

    owner = await get_user(session, document.user_id)
    if decision is KycStatus.APPROVED or owner.kyc_status != KycStatus.APPROVED.value:
        owner.kyc_status = decision.value
    details: dict[str, Any] = {
        "document_id": document.id,
        "document_type": document.document_type,
    }
    if reason is not None:
        details["reason"] = reason
    record_audit(
        session,
        Audit.KYC_APPROVED if decision is KycStatus.APPROVED else Audit.KYC_REJECTED,
        actor_id=principal.user_id,
        target_user_id=owner.id,
        ip=client.ip if client else None,
        **details,
    )
    await notify(
        session,
        events,
        owner.id,
        type=f"kyc.{decision.value}",
        title=_DECISION_TITLES[decision],
        body=reason or "Your identity document was approved.",
        data=details,
    )
    await session.flush()
    return document


_DECISION_TITLES = {
    KycStatus.APPROVED: "Identity document approved",
    KycStatus.REJECTED: "Identity document rejected",
}


def _ensure_pending(status: str) -> None:
    if status != KycStatus.PENDING.value:
        raise Conflict(
            f"This document has already been {status}; only pending documents can be decided."
        )
