"""Bodies as they go on the wire: quoted-printable, by line and by piece, cached. Pure.

The MIME writer (``mime.Writer``) writes its bodies with ``Encoder.body``; the size guard
measures the HTML with ``Encoder.size``, so the limit holds for the bytes a receiving server
(and Gmail's clipping) sees, not for the decoded text. Most lines of a digest (the layout, the
paper cards) are the same in every subscriber's email, so an ``Encoder`` keeps encoded lines by
line and by piece; a composer owns one. A render shared by everyone with the same digest
(``once``) is encoded once but for the lines with a recipient's values (``Shared``).
"""

from __future__ import annotations

import binascii
from binascii import b2a_qp
from collections.abc import Sequence
from typing import cast


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


class Shared:
    """How to encode the bodies made of the same pieces but for a recipient's own (the pieces
    at ``slots``): the lines without such a piece encoded, and the lines with one left as
    their pieces. Made by the first body that needs it (``Encoder.body``), then used by every
    body of the same render: only the lines with a recipient's values are encoded for each.
    """

    __slots__ = ("plan", "slots")

    def __init__(self, slots: Sequence[int]) -> None:
        self.slots = tuple(slots)
        self.plan: _Plan | None = None


#: The encoded lines, the pieces' own bytes objects (a copy joined once per render would
#: hold every body twice), with b"" where a line holds a slot piece; those lines' positions
#: and pieces (a str, or the number of a slot piece); then the text after the last line end
#: when it holds a slot piece (None when it does not), and whether any line ends before it.
_Line = tuple[str | int, ...]
_Plan = tuple[list[bytes], list[tuple[int, _Line]], _Line | None, bool]


class Pieces(list[str]):
    """The pieces of a body that keep their encoding once ``size`` has made it: the size
    guard measures the HTML, then the message writer sends the same bytes without encoding
    them again. ``shared``: pieces filled in from a render many bodies share (``Shared``)."""

    wire: bytes | None = None
    shared: Shared | None = None


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
        return b"".join(self._plan(parts, frozenset())[0])  # no slots: every line encoded

    def body(self, text: str, parts: Sequence[str] | None) -> bytes:
        """``text`` encoded; by piece when ``parts`` (whose join is ``text``) are given."""
        if isinstance(parts, Pieces):
            if parts.wire is not None:
                return parts.wire
            if parts.shared is not None and "\r" not in text:
                return self._shared(parts, parts.shared)
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

    def _shared(self, parts: Sequence[str], shared: Shared) -> bytes:
        """``quoted_printable_parts(parts)`` by ``shared``'s plan, made from these parts the
        first time."""
        plan = shared.plan
        if plan is None:
            plan = shared.plan = self._plan(parts, frozenset(shared.slots))
        encoded, slotted, tail, lines_before = plan
        lines = self._lines
        out = encoded.copy()
        for at, line in slotted:
            out[at] = lines("".join([parts[p] if isinstance(p, int) else p for p in line]))
        if tail is not None:
            rest = "".join([parts[p] if isinstance(p, int) else p for p in tail])
            last = rest.rfind("\n")
            if last >= 0:  # a recipient's value with a line end
                out.append(lines(rest[:last]))
                lines_before, rest = True, rest[last + 1 :]
            if rest or not lines_before:
                out.append(lines(rest))
        return b"".join(out)

    @staticmethod
    def _lines(text: str) -> bytes:
        """Each line of ``text`` (no CR in it) encoded, with its CRLF; "" is one empty line.
        Not cached: these lines hold a recipient's values, seen once."""
        if "\n" not in text:  # the usual case: a recipient's value is a line's part
            return b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n") + b"\r\n"
        return b"".join(
            [
                b2a_qp(line.encode("utf-8"), istext=True).replace(b"\n", b"\r\n") + b"\r\n"
                for line in text.split("\n")
            ]
        )

    def _plan(self, parts: Sequence[str], slots: frozenset[int]) -> _Plan:
        """The plan of ``Shared``: ``quoted_printable_parts`` of ``parts``, but for the lines
        with a slot piece in them, kept as their pieces."""
        encoded: list[bytes] = []
        add = encoded.append
        slotted_lines: list[tuple[int, _Line]] = []
        line: list[str | int] = []  # the pieces of the line being assembled
        slotted = False  # whether ``line`` holds a slot piece
        entries = self.young.get
        cache = self.lines
        cached = cache.young.get
        for i, part in enumerate(parts):
            if slots and i in slots:
                line.append(i)
                slotted = True
                continue
            entry = entries(part)
            if entry is None:
                first = part.find("\n")
                if first < 0:
                    line.append(part)
                    continue
                entry = self._entry(part, first)
            head, head_line, middle, tail = entry
            if slotted:
                line.append(head)
                slotted_lines.append((len(encoded), tuple(line)))
                add(b"")
            elif line:  # no slot piece in it: all str
                line.append(head)
                raw = "".join(cast("list[str]", line)).encode("utf-8")
                add(cached(raw) or cache.encode(raw))
            else:  # the line starts with this piece: its first line is encoded already
                add(head_line)
            if middle:
                add(middle)
            line, slotted = [tail], False
        lines = bool(encoded)
        tail_line: _Line | None = None
        if slotted:
            tail_line = tuple(line)
        else:
            rest = "".join(cast("list[str]", line))
            if rest or not lines:
                encoded.append(self._line(rest))
        return encoded, slotted_lines, tail_line, lines
