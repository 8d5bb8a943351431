"""Bodies as they go on the wire: quoted-printable, by line and by piece, cached. Pure.

The MIME writer (``mime.Writer``) writes its bodies with ``Encoder.body``; the size guard
measures the HTML with ``Encoder.size``, so the limit holds for the bytes a receiving server
(and Gmail's clipping) sees, not for the decoded text. Most lines of a digest (the layout, the
paper cards) are the same in every subscriber's email, so an ``Encoder`` keeps encoded lines by
line and by piece; a composer owns one.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence


class _LineCache:
    """Encoded lines (with their CRLF) by line, in two generations: lines that keep coming
    back (the layout, the paper cards) stay; a recipient's own lines (greeting, footer) age out."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.young: dict[bytes, bytes] = {}
        self.old: dict[bytes, bytes] = {}

    def encode(self, line: bytes) -> bytes:
        encoded = self.old.get(line)
        if encoded is None:
            encoded = binascii.b2a_qp(line, istext=True).replace(b"\n", b"\r\n") + b"\r\n"
        if len(self.young) >= self.size:
            self.old, self.young = self.young, {}
        self.young[line] = encoded
        return encoded


#: A piece's text before its first line end, that text encoded as a line of its own, the
#: piece's whole lines encoded, and its text after the last line end.
_Entry = tuple[str, bytes, bytes, str]


class Pieces(list[str]):
    """The pieces of a body that keep their encoding once ``size`` has made it: the size
    guard measures the HTML, then the message writer sends the same bytes without encoding
    them again."""

    wire: bytes | None = None


class Encoder:
    """Quoted-printable as the email package encodes it, with what it encoded so far.

    Pieces (layout literals, cards) are the same str objects in every email, so looking one
    up does not even hash it again; they are kept in two generations like the lines.
    """

    def __init__(self, lines: int = 12_000, pieces: int = 4_096) -> None:
        self.lines = _LineCache(lines)
        self.pieces_size = pieces
        self.young: dict[str, _Entry] = {}
        self.old: dict[str, _Entry] = {}

    def quoted_printable(self, text: str) -> bytes:
        """The body: CRLF line ends, ending with one, <= 76 columns.

        Quoted-printable encodes each line on its own (soft breaks never cross a line end),
        so a line encoded once serves every message that has it.
        """
        if "\r" in text:  # one scan in the usual case, not two replaces
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        data = text.encode("utf-8")
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        if not lines:
            return b"\r\n"  # as the email package writes an empty body
        cache = self.lines
        cached = cache.young.get
        return b"".join([cached(line) or cache.encode(line) for line in lines])

    def quoted_printable_parts(self, parts: Sequence[str]) -> bytes:
        """``quoted_printable("".join(parts))`` for text without CR, by piece.

        Quoted-printable encodes each line on its own, so the lines wholly inside a piece are
        encoded once per piece; only lines that straddle pieces are assembled and encoded.
        """
        out: list[bytes] = []
        add = out.append
        line: list[str] = []  # the pieces of the line being assembled
        entries = self.young.get
        cache = self.lines
        lines = cache.young.get
        for part in parts:
            entry = entries(part)
            if entry is None:
                first = part.find("\n")
                if first < 0:
                    line.append(part)
                    continue
                entry = self._entry(part, first)
            head, head_line, middle, tail = entry
            if line:
                line.append(head)
                raw = "".join(line).encode("utf-8")
                add(lines(raw) or cache.encode(raw))
                line = [tail]
            else:  # the line starts with this piece: its first line is encoded already
                add(head_line)
                line.append(tail)
            add(middle)
        rest = "".join(line)
        if rest or not out:
            add(self._line(rest))
        return b"".join(out)

    def body(self, text: str, parts: Sequence[str] | None) -> bytes:
        """``text`` encoded; by piece when ``parts`` (whose join is ``text``) are given."""
        if isinstance(parts, Pieces) and parts.wire is not None:
            return parts.wire
        if parts is None or "\r" in text:  # CR is made a line end: leave that to the whole text
            return self.quoted_printable(text)
        return self.quoted_printable_parts(parts)

    def size(self, text: str, parts: Sequence[str] | None = None) -> int:
        """Bytes of ``body(text, parts)``: the body as it goes on the wire, CRLFs included.

        ``Pieces`` keep the bytes, for ``body`` to return when the message is written.
        """
        encoded = self.body(text, parts)
        if isinstance(parts, Pieces):
            parts.wire = encoded
        return len(encoded)

    def _entry(self, part: str, first: int) -> _Entry:
        found = self.old.get(part)
        if found is None:
            last = part.rfind("\n")
            middle = part[first + 1 : last + 1]
            head = part[:first]
            found = (
                head,
                self._line(head),
                self.quoted_printable(middle) if middle else b"",
                part[last + 1 :],
            )
        if len(self.young) >= self.pieces_size:
            self.old, self.young = self.young, {}
        self.young[part] = found
        return found

    def _line(self, text: str) -> bytes:
        """One line (no line end in it) encoded, with its CRLF."""
        line = text.encode("utf-8")
        return self.lines.young.get(line) or self.lines.encode(line)
