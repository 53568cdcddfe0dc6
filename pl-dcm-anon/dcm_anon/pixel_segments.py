"""Comments and application segments out of compressed pixel data, without decoding it.

A JPEG stream (baseline, extended, lossless, JPEG-LS) may carry APPn
segments (JFIF, Exif with its date and camera, vendor blocks) and COM
segments (free text: a name, a record number, a date were found in one)
before its image data. None of them holds pixel information: a decoder
needs the frame and scan headers, the tables and the entropy-coded data,
and for a grey-level CT image nothing else (Adobe's APP14, 12 bytes of
flags that say whether colour components are RGB, is kept). JPEG 2000 has COM (FF64) in its
main header. This module copies each frame's stream without those
segments, so the image decodes to the same pixels, and rewrites the Basic
Offset Table to the new fragment positions.
"""

from __future__ import annotations

import struct

_ITEM = b"\xfe\xff\x00\xe0"
_SOI, _J2K_SOC = b"\xff\xd8", b"\xff\x4f"
_SOS, _J2K_SOT = 0xDA, 0x90
_J2K_COM = 0x64


class BadStream(Exception):
    """The encapsulated pixel data is not what its transfer syntax says (one-line reason)."""


def _items(value: bytes) -> list[bytes]:
    """The items (offset table first, then fragments) of encapsulated pixel data."""
    items, pos = [], 0
    while pos < len(value):
        if value[pos:pos + 4] != _ITEM:
            if value[pos:pos + 4] == b"\xfe\xff\xdd\xe0":
                break   # the sequence delimiter, when it is part of the value
            raise BadStream("encapsulated pixel data: an item tag is missing")
        (length,) = struct.unpack_from("<L", value, pos + 4)
        if pos + 8 + length > len(value):
            raise BadStream("encapsulated pixel data: a fragment runs past the end")
        items.append(value[pos + 8:pos + 8 + length])
        pos += 8 + length
    if not items:
        raise BadStream("encapsulated pixel data: no offset table")
    return items


def _adobe(segment: bytes) -> bool:
    """Adobe's APP14, fixed at 12 bytes of flags: it says whether 3 components are RGB or YCbCr."""
    return segment[1] == 0xEE and len(segment) == 16 and segment[4:9] == b"Adobe"


def _jpeg(stream: bytes) -> bytes:
    """``stream`` (starting with SOI) without its APPn and COM segments before the scan."""
    out, pos = [_SOI], 2
    while pos < len(stream):
        if stream[pos] != 0xFF or pos + 1 >= len(stream):
            raise BadStream("JPEG stream: a marker is missing before the image data")
        marker = stream[pos + 1]
        if marker == 0xFF:                        # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:   # TEM, RSTn, SOI: no length
            out.append(stream[pos:pos + 2])
            pos += 2
            continue
        if marker == 0xD9:                        # EOI before any scan
            out.append(stream[pos:])
            return b"".join(out)
        if pos + 4 > len(stream):
            raise BadStream("JPEG stream: cut inside a marker segment")
        (length,) = struct.unpack_from(">H", stream, pos + 2)
        if marker == _SOS:
            out.append(stream[pos:])              # scan header, image data, and what follows
            return b"".join(out)
        segment = stream[pos:pos + 2 + length]
        if not (0xE0 <= marker <= 0xEF or marker == 0xFE) or _adobe(segment):
            out.append(segment)
        pos += 2 + length
    return b"".join(out)


def _j2k(stream: bytes) -> bytes:
    """A JPEG 2000 codestream without the COM segments of its main header."""
    out, pos = [_J2K_SOC], 2
    while pos + 4 <= len(stream):
        if stream[pos] != 0xFF:
            raise BadStream("JPEG 2000 codestream: a marker is missing in the main header")
        marker = stream[pos + 1]
        if marker == _J2K_SOT:
            out.append(stream[pos:])
            return b"".join(out)
        (length,) = struct.unpack_from(">H", stream, pos + 2)
        if marker != _J2K_COM:
            out.append(stream[pos:pos + 2 + length])
        pos += 2 + length
    raise BadStream("JPEG 2000 codestream: no tile follows the main header")


def _clean(fragment: bytes) -> bytes:
    if fragment.startswith(_SOI):
        cleaned = _jpeg(fragment)
    elif fragment.startswith(_J2K_SOC):
        cleaned = _j2k(fragment)
    else:
        return fragment   # a frame's later fragment, or a stream (RLE) without such segments
    return cleaned + b"\x00" if len(cleaned) % 2 else cleaned   # items have even length


def strip_segments(value: bytes) -> bytes | None:
    """Encapsulated pixel data without APPn and COM segments, or None when it has none."""
    offsets, *fragments = _items(value)
    cleaned = [_clean(f) for f in fragments]
    if all(len(a) == len(b) for a, b in zip(cleaned, fragments)):
        return None
    table = b""
    if offsets:
        old_at, new_at, old, new = {}, [], 0, 0
        for i, (a, b) in enumerate(zip(fragments, cleaned)):
            old_at[old] = i
            new_at.append(new)
            old, new = old + 8 + len(a), new + 8 + len(b)
        starts = struct.unpack(f"<{len(offsets) // 4}L", offsets[:len(offsets) // 4 * 4])
        if any(s not in old_at for s in starts):
            raise BadStream("encapsulated pixel data: the offset table points between fragments")
        table = struct.pack(f"<{len(starts)}L", *(new_at[old_at[s]] for s in starts))
    parts = [_ITEM, struct.pack("<L", len(table)), table]
    for f in cleaned:
        parts += [_ITEM, struct.pack("<L", len(f)), f]
    return b"".join(parts)
