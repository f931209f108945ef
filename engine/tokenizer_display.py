"""How a single token is shown to a person (`Tokenizer.token_text`): " the" for "Ġthe" or "▁the", "<0xE4>"
for a byte that is only part of a character.

Decoding one token on its own cannot show a candidate list's byte tokens: a piece that holds part of a
UTF-8 character decodes to U+FFFD. So the piece's bytes are recovered instead (GPT-2's byte table for
byte-level vocabularies, the <0xNN> pieces of SentencePiece ones), and each stray byte is shown as <0xNN>.
"""

from __future__ import annotations

import re

from tokenizers import Tokenizer as _Backend

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


# --- showing single tokens ---------------------------------------------------------------------------


def _piece_style(backend: _Backend) -> str:
    """How vocabulary pieces encode text: "byte_level" (GPT-2 "Ġ"), "metaspace" ("▁", <0xNN>), or "other"."""
    decoder = backend.decoder
    if decoder is None:
        return "other"
    state = decoder.__getstate__()
    description = state.decode("utf-8") if isinstance(state, bytes) else str(state)
    if '"ByteLevel"' in description:
        return "byte_level"
    if "▁" in description or '"ByteFallback"' in description:
        return "metaspace"
    return "other"


def _gpt2_byte_table() -> dict[str, int]:
    """GPT-2's reversible byte -> printable character table, inverted: printable character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[str, int] = {chr(b): b for b in printable}
    shift = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shift)] = b  # bytes without a printable form are moved past U+00FF
            shift += 1
    return table


_GPT2_BYTES = _gpt2_byte_table()


def _byte_level_bytes(piece: str) -> bytes | None:
    try:
        return bytes(_GPT2_BYTES[char] for char in piece)
    except KeyError:
        return None


def _render_bytes(raw: bytes) -> str:
    """Decode what is valid UTF-8 and show each stray byte (part of a split character) as <0xNN>."""
    text = raw.decode("utf-8", errors="surrogateescape")
    return "".join(f"<0x{ord(c) - 0xDC00:02X}>" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)
