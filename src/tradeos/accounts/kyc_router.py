"""KYC endpoints: uploads and status for users, review for admins.

/auth/kyc      upload (multipart), status, and the user's own documents' files
/admin/kyc     the review queue, a document's details and file, approve, reject

A document's file is only ever served here, to its owner or an admin, as an attachment that
a browser must not sniff into something else (never inline, never from a static path).

The endpoints that store or fetch a file take no request session: they authenticate in a
short unit of work of their own (`get_principal_before_work`, with the same scope and role
checks as the usual dependencies), and the service opens its own short units of work around
the storage I/O, never across it (see `kyc`'s docstring: SQLite has one connection per
process). The others (status, the review list, details, decisions) do no file I/O and work
in the request's session as usual.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, File, Form, Query, UploadFile, status
from fastapi.responses import Response

from tradeos.accounts import kyc
from tradeos.accounts.deps import (
    AdminBeforeWorkDep,
    AdminDep,
    ClientDep,
    ReaderBeforeWorkDep,
    ReaderDep,
    TraderBeforeWorkDep,
)
from tradeos.accounts.kyc_schemas import (
    DocumentStatusFilter,
    KycDocumentAdminOut,
    KycDocumentOut,
    KycRejectRequest,
    KycStatusOut,
)
from tradeos.accounts.models import KycDocument, KycDocumentType, KycStatus
from tradeos.core.db import MAX_ROW_ID
from tradeos.core.deps import (
    DatabaseDep,
    EventsDep,
    PageQuery,
    ResourceId,
    SessionDep,
    SettingsDep,
    StorageDep,
)
from tradeos.core.pagination import Ordering, Page, paginate
from tradeos.core.ratelimit import ip_rate_limit
from tradeos.core.routing import APIRouter

user_kyc = APIRouter(
    prefix="/auth/kyc", tags=["kyc"], dependencies=[Depends(ip_rate_limit("auth"))]
)
admin_kyc = APIRouter(prefix="/admin/kyc", tags=["admin", "kyc"])


_FILE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The document's bytes, as an attachment.",
        "content": {media_type: {} for media_type in sorted(kyc.EXTENSIONS)},
    }
}


def _file_response(document: KycDocument, data: bytes) -> Response:
    return Response(
        content=data,
        media_type=document.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{kyc.download_filename(document)}"',
            "X-Content-Type-Options": "nosniff",
            # Identity documents: no shared cache, no copy left behind, no script if opened.
            "Cache-Control": "private, no-store",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


# -- users ---------------------------------------------------------------------------------


@user_kyc.post("/upload", status_code=status.HTTP_201_CREATED)
async def upload_document(
    document_type: Annotated[KycDocumentType, Form(description="What the document is.")],
    file: Annotated[
        UploadFile,
        File(
            description="A PDF, JPEG or PNG (judged by its content), at most KYC_MAX_UPLOAD_BYTES."
        ),
    ],
    principal: TraderBeforeWorkDep,
    database: DatabaseDep,
    settings: SettingsDep,
    storage: StorageDep,
    client: ClientDep,
) -> KycDocumentOut:
    document = await kyc.upload_document(
        database,
        storage,
        settings,
        principal,
        document_type=document_type,
        file=file,
        client=client,
    )
    return KycDocumentOut.model_validate(document)


@user_kyc.get("/status")
async def kyc_status(principal: ReaderDep, session: SessionDep) -> KycStatusOut:
    status_, documents = await kyc.kyc_status(session, principal)
    return KycStatusOut(
        kyc_status=KycStatus(status_),
        documents=[KycDocumentOut.model_validate(document) for document in documents],
    )


@user_kyc.get("/documents/{document_id}", response_class=Response, responses=_FILE_RESPONSE)
async def download_own_document(
    document_id: ResourceId,
    principal: ReaderBeforeWorkDep,
    database: DatabaseDep,
    storage: StorageDep,
) -> Response:
    document, data = await kyc.read_document(database, storage, principal, document_id)
    return _file_response(document, data)


# -- admins --------------------------------------------------------------------------------


@admin_kyc.get("/documents")
async def list_documents(
    admin: AdminDep,
    session: SessionDep,
    paging: PageQuery,
    order: Annotated[Ordering, Depends(kyc.DOCUMENT_SORT)],
    status_filter: Annotated[
        DocumentStatusFilter,
        Query(alias="status", description="Documents in this status; `all` for every one."),
    ] = "pending",
    user_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
    document_type: KycDocumentType | None = None,
) -> Page[KycDocumentAdminOut]:
    query = kyc.documents_query(
        status=None if status_filter == "all" else status_filter,
        user_id=user_id,
        document_type=document_type,
        ordering=order,
    )
    page = await paginate(session, query, paging)
    return page.map(KycDocumentAdminOut.model_validate)


@admin_kyc.get("/documents/{document_id}")
async def get_document(
    document_id: ResourceId, admin: AdminDep, session: SessionDep
) -> KycDocumentAdminOut:
    return KycDocumentAdminOut.model_validate(await kyc.get_document(session, admin, document_id))


@admin_kyc.get("/documents/{document_id}/file", response_class=Response, responses=_FILE_RESPONSE)
async def download_document(
    document_id: ResourceId, admin: AdminBeforeWorkDep, database: DatabaseDep, storage: StorageDep
) -> Response:
    document, data = await kyc.read_document(database, storage, admin, document_id)
    return _file_response(document, data)


@admin_kyc.post("/documents/{document_id}/approve")
async def approve_document(
    document_id: ResourceId,
    admin: AdminDep,
    session: SessionDep,
    events: EventsDep,
    client: ClientDep,
) -> KycDocumentAdminOut:
    document = await kyc.approve_document(session, events, admin, document_id, client=client)
    return KycDocumentAdminOut.model_validate(document)


@admin_kyc.post("/documents/{document_id}/reject")
async def reject_document(
    document_id: ResourceId,
    body: KycRejectRequest,
    admin: AdminDep,
    session: SessionDep,
    events: EventsDep,
    client: ClientDep,
) -> KycDocumentAdminOut:
    document = await kyc.reject_document(
        session, events, admin, document_id, reason=body.reason, client=client
    )
    return KycDocumentAdminOut.model_validate(document)


routers = (user_kyc, admin_kyc)
