"""What kind of document a byte string is, judged by its content alone (no I/O).

An uploaded file's name and declared Content-Type are the client's claims; this module looks at
the bytes. The `filetype` library reads the magic number, and on top of it each accepted type
must also look whole: a PDF must carry its `%%EOF` trailer, a PNG its IHDR header chunk, a JPEG
its end-of-image marker. Anything else, whatever it is called, is refused (`None`).
"""

from __future__ import annotations

import re
import struct
import zlib

import filetype  # type: ignore[import-untyped]

PDF = "application/pdf"
JPEG = "image/jpeg"
PNG = "image/png"
ALLOWED_DOCUMENT_TYPES: frozenset[str] = frozenset({PDF, JPEG, PNG})

# "%PDF-1.7", "%PDF-2.0": the header, at the very start (no BOM, no leading junk).
_PDF_HEADER = re.compile(rb"%PDF-\d\.\d")
_PDF_EOF = b"%%EOF"
_PDF_TRAILER_WINDOW = 1024

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The first chunk of every PNG: length 13, type IHDR, 13 bytes of data, a CRC.
_PNG_IHDR = struct.Struct(">I4sIIBBBBBI")

_JPEG_START = b"\xff\xd8\xff"  # SOI, then the first marker
_JPEG_END = b"\xff\xd9"  # EOI
# Some writers pad after EOI; tolerate whitespace and NUL padding, nothing else.
_JPEG_PADDING = b" \t\r\n\x00"


def sniff_document_type(data: bytes) -> str | None:
    """`application/pdf`, `image/jpeg` or `image/png` if `data` is one of those, else None."""
    if not data:
        return None
    kind = filetype.guess(data)
    mime = getattr(kind, "mime", None)
    if not isinstance(mime, str) or mime not in ALLOWED_DOCUMENT_TYPES:
        return None
    checks = {PDF: _looks_like_pdf, PNG: _looks_like_png, JPEG: _looks_like_jpeg}
    return mime if checks[mime](data) else None


def _looks_like_pdf(data: bytes) -> bool:
    return _PDF_HEADER.match(data) is not None and _PDF_EOF in data[-_PDF_TRAILER_WINDOW:]


def _looks_like_png(data: bytes) -> bool:
    if not data.startswith(_PNG_SIGNATURE):
        return False
    header = data[len(_PNG_SIGNATURE) : len(_PNG_SIGNATURE) + _PNG_IHDR.size]
    if len(header) != _PNG_IHDR.size:
        return False
    length, chunk_type, width, height, *_fields, crc = _PNG_IHDR.unpack(header)
    return bool(
        length == 13
        and chunk_type == b"IHDR"
        and width > 0
        and height > 0
        and zlib.crc32(header[4:-4]) == crc
    )


def _looks_like_jpeg(data: bytes) -> bool:
    body = data.rstrip(_JPEG_PADDING)
    # The EOI must come after SOI and the first marker, not overlap them.
    return (
        len(body) >= len(_JPEG_START) + 1 + len(_JPEG_END)
        and body.startswith(_JPEG_START)
        and body.endswith(_JPEG_END)
    )
