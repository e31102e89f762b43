"""Document type sniffing: the content decides, and only whole PDFs, PNGs and JPEGs pass."""

from __future__ import annotations

import random
import struct

import pytest

from tests.documents import JPEG, PDF, PNG, png_chunk
from tradeos.core.filetypes import ALLOWED_DOCUMENT_TYPES, sniff_document_type


def test_allowed_types() -> None:
    assert frozenset({"application/pdf", "image/jpeg", "image/png"}) == ALLOWED_DOCUMENT_TYPES


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PDF, "application/pdf"),
        (b"%PDF-2.0\n%\xe2\xe3\xcf\xd3\n1 0 obj\nendobj\n%%EOF", "application/pdf"),
        (PDF + b"\r\n" + b"\x00" * 500, "application/pdf"),  # EOF within the last 1024 bytes
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (JPEG + b"\r\n\x00\x00 ", "image/jpeg"),  # padding after EOI is tolerated
        (b"\xff\xd8\xff\xe0\xff\xd9", "image/jpeg"),
    ],
    ids=["pdf", "pdf-2.0", "pdf-padded", "png", "jpeg", "jpeg-padded", "jpeg-minimal"],
)
def test_recognises_real_documents(data: bytes, expected: str) -> None:
    assert sniff_document_type(data) == expected


def test_content_decides_not_the_name() -> None:
    # A PNG someone called passport.pdf is a PNG; the caller never passes a name at all.
    assert sniff_document_type(PNG) == "image/png"
    assert sniff_document_type(bytearray(PDF)) == "application/pdf"  # type: ignore[arg-type]


FORGED = {
    "empty": b"",
    "html": b"<html><body><script>alert(1)</script></body></html>",
    "html-mentioning-pdf": b"<html>%PDF-1.4 %%EOF</html>",
    "pdf-without-eof": b"%PDF-1.4\n1 0 obj <<>> endobj\n",
    "pdf-eof-too-early": PDF + b"A" * 2048,
    "pdf-bad-version": b"%PDF-x\n%%EOF",
    "pdf-after-bom": b"\xef\xbb\xbf" + PDF,
    "pdf-after-whitespace": b"\n" + PDF,
    "pdf-header-only": b"%PDF-",
    "random": random.Random(20261101).randbytes(4096),
    "gif": b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01;",
    "zip": b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 40,
    "exe": b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 64,
    "png-signature-only": b"\x89PNG\r\n\x1a\n",
    "png-without-ihdr": b"\x89PNG\r\n\x1a\n" + png_chunk(b"IDAT", b"\x00" * 13),
    "png-bad-ihdr-crc": PNG[:29] + b"\x00\x00\x00\x00" + PNG[33:],
    "png-zero-size": b"\x89PNG\r\n\x1a\n"
    + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0)),
    "png-truncated-magic": b"\x89PNG\x00\x00\x00\x00",
    "jpeg-truncated": JPEG[:-2],
    "jpeg-with-appended-zip": JPEG + b"PK\x03\x04" + b"\x00" * 20,
    "jpeg-soi-only": b"\xff\xd8\xff",
    "jpeg-overlapping-eoi": b"\xff\xd8\xff\xd9",
    "gif-called-jpeg": b"GIF89a" + JPEG,
}


@pytest.mark.parametrize("data", list(FORGED.values()), ids=list(FORGED))
def test_refuses_everything_else(data: bytes) -> None:
    assert sniff_document_type(data) is None
