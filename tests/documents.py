"""Small, valid sample documents for the tests of uploads and content sniffing."""

from __future__ import annotations

import struct
import zlib


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_png() -> bytes:
    """A valid 1×1 greyscale PNG."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + png_chunk(b"IEND", b"")
    )


def make_pdf(size: int | None = None) -> bytes:
    """A minimal, well-formed one-page PDF; with `size`, padded with a comment to exactly that
    many bytes."""
    head = (
        b"%PDF-1.4\n"
        b"1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
        b"2 0 obj <</Type /Pages /Kids [3 0 R] /Count 1>> endobj\n"
        b"3 0 obj <</Type /Page /Parent 2 0 R /MediaBox [0 0 72 72]>> endobj\n"
        b"trailer <</Root 1 0 R>>\n"
    )
    tail = b"%%EOF\n"
    if size is None:
        return head + tail
    padding = size - len(head) - len(tail) - 2
    assert padding >= 0, "too small for a PDF"
    return head + b"%" + b"x" * padding + b"\n" + tail


def make_jpeg() -> bytes:
    """SOI, a JFIF APP0 segment, EOI: the shape of every JPEG."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0 + b"\xff\xd9"


PNG, PDF, JPEG = make_png(), make_pdf(), make_jpeg()
