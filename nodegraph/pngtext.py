"""A PNG's text chunks, read without decoding its pixels.

Graph files may be PNGs that Save wrote, and a PNG of a few kilobytes can hold an image
of gigabytes: only the chunk headers are read, and every other chunk is skipped.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_BYTES = 64 << 20  # all text chunks together, decompressed: as much as a graph file may hold
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def read_text(stream: BinaryIO) -> dict[str, str]:
    """Keyword -> text of the PNG's tEXt, zTXt and iTXt chunks (the first of each keyword).

    Raises ValueError, with a message for people, if the stream is not a PNG or its text
    is malformed or larger than MAX_TEXT_BYTES.
    """
    if stream.read(len(SIGNATURE)) != SIGNATURE:
        raise ValueError("it does not start with the PNG signature")
    texts: dict[str, str] = {}
    budget = MAX_TEXT_BYTES
    while len(header := stream.read(8)) == 8:  # a truncated file keeps the text read so far
        length, kind = struct.unpack(">I4s", header)
        if kind == b"IEND":
            break
        if kind not in _TEXT_CHUNKS:
            stream.seek(length + 4, 1)  # the chunk's data and its CRC
            continue
        if length > budget:
            raise ValueError(f"its text chunks hold more than {MAX_TEXT_BYTES >> 20} MB")
        data = stream.read(length)
        stream.seek(4, 1)
        keyword, text = _decode(kind, data, budget)
        budget -= len(text)
        texts.setdefault(keyword, text)
    return texts


def _decode(kind: bytes, data: bytes, budget: int) -> tuple[str, str]:
    keyword, separator, rest = data.partition(b"\0")
    if not separator or not 1 <= len(keyword) <= 79:
        raise ValueError(f"a {kind.decode()} chunk has no valid keyword")
    name = keyword.decode("latin-1")
    if kind == b"tEXt":
        return name, _latin1_or_utf8(rest)
    if kind == b"zTXt":
        return name, _latin1_or_utf8(_inflate(rest[1:], budget, name))
    # iTXt: compression flag, method, language tag \0, translated keyword \0, UTF-8 text
    if len(rest) < 2:
        raise ValueError(f"the iTXt chunk {name!r} is truncated")
    compressed, body = rest[0], rest[2:]
    _, _, body = body.partition(b"\0")
    _, _, body = body.partition(b"\0")
    text = _inflate(body, budget, name) if compressed else body
    try:
        return name, text.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"the iTXt chunk {name!r} is not UTF-8 text") from None


def _latin1_or_utf8(data: bytes) -> str:
    """tEXt and zTXt are Latin-1 by the standard, but many writers put UTF-8 in them: where the
    bytes are valid UTF-8 (which Latin-1 text beyond ASCII almost never is), read them so."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _inflate(data: bytes, budget: int, name: str) -> bytes:
    """zlib-decompress at most `budget` bytes: a compressed chunk may expand a thousandfold."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, budget + 1)
    except zlib.error as error:
        raise ValueError(f"the compressed text chunk {name!r} is corrupt ({error})") from None
    if len(out) > budget:
        raise ValueError(f"its text chunks hold more than {MAX_TEXT_BYTES >> 20} MB")
    return out
