"""Requests and responses of the KYC endpoints (/auth/kyc for users, /admin/kyc for admins)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from tradeos.accounts.models import KycDocumentType, KycStatus
from tradeos.core.fields import NoNul, text

# What a document can be; a user's overall status adds `none` (nothing uploaded yet).
DocumentStatus = Literal["pending", "approved", "rejected"]
# The admin list's status filter: one status, or every document.
DocumentStatusFilter = Literal["pending", "approved", "rejected", "all"]

REVIEW_REASON_MAX_LENGTH = 500
ReviewReason = Annotated[str, text(REVIEW_REASON_MAX_LENGTH), NoNul]


class KycDocumentOut(BaseModel):
    """A document as its owner sees it. Where the file is stored is never shown to anyone."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    document_type: KycDocumentType
    status: DocumentStatus
    content_type: str = Field(description="What the content is (sniffed), not what was claimed.")
    size_bytes: int
    original_filename: str | None = Field(
        description="The uploaded file's name, sanitized; shown for reference only."
    )
    review_reason: str | None = Field(description="Why the document was rejected, if it was.")
    created_at: datetime
    reviewed_at: datetime | None


class KycStatusOut(BaseModel):
    kyc_status: KycStatus
    documents: list[KycDocumentOut] = Field(description="The user's documents, newest first.")


class KycDocumentAdminOut(KycDocumentOut):
    """A document as a reviewer sees it: whose it is, its digest, who decided it."""

    user_id: int
    sha256: str
    reviewer_id: int | None


class KycRejectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: ReviewReason = Field(description="Why, in words the user will read (1 to 500).")
