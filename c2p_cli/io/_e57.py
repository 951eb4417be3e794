"""ASTM E57 scans through pye57 (libE57Format, C++): the `e57` extra.

libE57Format is a C++ parser, so the file is checked here first: the 48-byte header (signature,
physical length equal to the file's size, page size, XML section inside the file), then the XML
section itself, parsed by Python with DTDs refused, whose declared point counts must be within
`max_points` and whose binary sections must lie inside the file, then each section's data packets
(their headers only): every field's bytes must hold the declared recordCount, which libE57Format
does not check (a count raised ten times reads nine tenths garbage). Every scan is read with its pose
applied (pye57's read_scan), and the scans are concatenated.
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

import numpy as np

from ._common import Geometry, _ParseError, _read_exact, _short, _Source

_EXTRA = "pip install 'clip2point[e57]'"
_SIGNATURE = b"ASTM-E57"
_MAX_XML = 64 << 20


def _read_e57(src: _Source) -> Geometry:
    counts = _check_e57(src)
    try:
        import pye57
    except ImportError:
        raise _ParseError(f"reading E57 files needs pye57: {_EXTRA}") from None
    try:
        e57 = pye57.E57(str(src.path))
        try:
            parts = []
            for i in range(e57.scan_count):
                if e57.get_header(i).point_count > src.max_points:
                    raise _ParseError(f"scan {i} declares more than {src.max_points} points (max_points)")
                data = e57.read_scan(i, ignore_missing_fields=True)
                parts.append(np.stack([data["cartesianX"], data["cartesianY"], data["cartesianZ"]], axis=1))
        finally:
            e57.close()
    except _ParseError:
        raise
    except Exception as e:  # libE57Format raises its own exception types
        raise _ParseError(f"cannot read E57 file: {_short(e, 140)}") from None
    if not parts or not sum(len(p) for p in parts):
        raise _ParseError("no points" if counts == 0 or parts else "E57 file holds no scan")
    return Geometry(np.concatenate(parts).astype(np.float64, copy=False))


def _check_e57(src: _Source) -> int:
    """Header, XML and data-section checks before libE57Format sees the file; returns the declared
    point total."""
    with src.open() as fh:
        head = fh.read(48)
        if len(head) < 48 or head[:8] != _SIGNATURE:
            raise _ParseError("not an E57 file (does not start with 'ASTM-E57')")
        _major, _minor, length, xml_offset, xml_length, page = struct.unpack("<IIQQQQ", head[8:48])
        if length != src.size:
            raise _ParseError(f"E57 header says the file has {length} bytes, it has {src.size}")
        if page != _PAGE or src.size % page:
            raise _ParseError(f"E57 page size {page} or file size {src.size} is not what the standard requires")
        if xml_length > _MAX_XML or xml_offset >= src.size:
            raise _ParseError("E57 XML section is too large or lies outside the file")
        paged = _Paged(fh, src.size)
        xml = paged.read(xml_offset, xml_length, "XML section")
        if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
            raise _ParseError("E57 XML declares a DTD or entities (refused)")
        try:
            root = ET.fromstring(xml)
        except ET.ParseError as e:
            raise _ParseError(f"E57 XML does not parse ({_short(e, 100)})") from None
        sections = [el for el in root.iter() if _tag(el) == "points" and el.get("type") == "CompressedVector"]
        total = 0
        for el in sections:
            try:
                count = int(el.get("recordCount", "0"))
                offset = int(el.get("fileOffset", "0"))
            except ValueError:
                raise _ParseError("E57 XML has a points section with a malformed recordCount or fileOffset") from None
            if count < 0 or offset < 0 or offset >= src.size:
                raise _ParseError("E57 XML has a points section outside the file or with a negative count")
            total += count
        if total > src.max_points:
            raise _ParseError(f"E57 XML declares {total} points, more than the limit of {src.max_points} (max_points)")
        for i, el in enumerate(sections):
            _check_records_present(paged, el, i)
    return total


# Pages of the E57 file: 1020 data bytes, then a 4-byte checksum.
_PAGE, _PAGE_DATA = 1024, 1020
_DATA_PACKET = 1


def _tag(el: ET.Element) -> str:
    return el.tag.rsplit("}", 1)[-1]


class _Paged:
    """Reads the file's logical bytes (the page checksums skipped) at physical offsets."""

    def __init__(self, fh, size: int):
        self.fh, self.size = fh, size

    def advance(self, phys: int, n: int) -> int:
        """The physical offset `n` logical bytes after `phys`."""
        logical = phys // _PAGE * _PAGE_DATA + phys % _PAGE + n
        return logical // _PAGE_DATA * _PAGE + logical % _PAGE_DATA

    def read(self, phys: int, n: int, what: str) -> bytes:
        if phys % _PAGE >= _PAGE_DATA:
            raise _ParseError(f"E57 {what} starts inside a page checksum")
        if self.advance(phys, n) > self.size:
            raise _ParseError(f"E57 {what} runs past the end of the file")
        parts = []
        while n > 0:
            take = min(n, _PAGE_DATA - phys % _PAGE)
            self.fh.seek(phys)
            parts.append(_read_exact(self.fh, take))
            n -= take
            phys = (phys // _PAGE + 1) * _PAGE
        return b"".join(parts)


def _field_bits(prototype: ET.Element, scan: int) -> list[int]:
    """Bits per record of each bytestream, in the prototype's (depth-first) order of its fields:
    floats 32 or 64, integers packed into just enough bits for their [minimum, maximum] (none for
    a constant), as the standard's bitpack codec stores them; -1 where unknown (not checked)."""
    bits = []
    for el in prototype.iter():
        kind = el.get("type")
        if el is prototype or kind in ("Structure", "Vector"):
            continue
        if kind == "Float":
            bits.append(32 if el.get("precision") == "single" else 64)
        elif kind in ("Integer", "ScaledInteger"):
            try:
                low, high = int(el.get("minimum", -(1 << 63))), int(el.get("maximum", (1 << 63) - 1))
            except ValueError:
                raise _ParseError(f"E57 scan {scan}: field {_tag(el)!r} has a malformed minimum or maximum") from None
            if high < low:
                raise _ParseError(f"E57 scan {scan} has a field {_tag(el)!r} whose maximum is below its minimum")
            bits.append((high - low).bit_length())
        else:
            bits.append(-1)
    return bits


def _check_records_present(paged: _Paged, points: ET.Element, scan: int) -> None:
    """The declared recordCount must fit in the bytes the data packets of the section hold, field
    by field: a count raised without the data would make the C++ reader return garbage points."""
    count, offset = int(points.get("recordCount", "0")), int(points.get("fileOffset", "0"))
    prototype = next((el for el in points if _tag(el) == "prototype"), None)
    if count == 0 or prototype is None:
        return
    bits = _field_bits(prototype, scan)
    head = paged.read(offset, 32, f"scan {scan} data section header")
    section_id, length, data_offset = head[0], *struct.unpack("<QQ", head[8:24])
    end = paged.advance(offset, length)
    if section_id != 1 or end > paged.size or not offset < data_offset < end:
        raise _ParseError(f"E57 scan {scan}: its data section header is malformed or runs past the file")
    stream_bytes = [0] * len(bits)
    phys = data_offset
    while phys < end:
        what = f"scan {scan} data packet"
        kind, _flags, length_minus_1, n_streams = struct.unpack("<BBHH", paged.read(phys, 6, what))
        if kind == _DATA_PACKET:
            if n_streams != len(bits):
                raise _ParseError(f"E57 scan {scan}: a data packet has {n_streams} bytestreams for {len(bits)} fields")
            lengths = struct.unpack(f"<{n_streams}H", paged.read(paged.advance(phys, 6), 2 * n_streams, what))
            stream_bytes = [a + b for a, b in zip(stream_bytes, lengths, strict=True)]
        phys = paged.advance(phys, length_minus_1 + 1)
    held = min((8 * n // b for n, b in zip(stream_bytes, bits, strict=True) if b > 0), default=count)
    if count > held:
        raise _ParseError(f"E57 scan {scan} declares {count} points, its data section holds {held}")
