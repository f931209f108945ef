"""An answer's tokens as rich Text: one span per token, coloured by the model's probability of it
(the heatmap) or by alternating backgrounds that show where tokens begin, with the inspect cursor
reversed; and which wrapped line that cursor falls on.

Apart from the message widgets (message.py) because these are pure functions of the tokens: the
chat screen draws the heatmap's legend with them, and tests check them without a widget.
"""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text

from tiankong.tui.widgets.candidates import chosen_text, show_token

# Heatmap buckets of the chosen token's model probability: (upper bound, background, legend label).
# Each colour stays apart from the others where the terminal has fewer (tmux's default is 256; the
# 256-colour and 16-colour codes in the comments): the earlier orange and olive were both 94 there.
# Dark enough for the default light text on each.
HEAT = (
    (0.1, "#8b1c1c", "<10%"),  # red: 88, 1
    (0.3, "#a0520a", "<30%"),  # orange: 130, 3
    (0.6, "#6b6b2a", "<60%"),  # olive: 58, 8
    (0.9, "#276b0c", "<90%"),  # green: 22, 2
    (2.0, "#007878", "≥90%"),  # teal: 30, 6
)
_BOUNDARY = ("", "on #2a2f3a")  # alternating backgrounds that make token boundaries visible


def heat_style(p: float) -> str:
    for hi, colour, _ in HEAT:
        if p < hi:
            return f"on {colour}"
    return f"on {HEAT[-1][1]}"


def heat_legend() -> Text:
    out = Text("model p of each token: ", style="dim")
    for _, colour, label in HEAT:
        out.append(f" {label} ", style=f"on {colour}")
        out.append(" ")
    return out


def tokens_text(tokens: list[dict[str, Any]], *, heatmap: bool, cursor: int | None) -> Text:
    """The answer as rich Text, one span per token, styled by heatmap bucket or boundary parity;
    the cursor token reversed (tokens that add no text, like EOS, show their name there)."""
    out = Text()
    for i, tok in enumerate(tokens):
        text = tok["text"]
        style = heat_style(math.exp(tok["logprob"])) if heatmap else _BOUNDARY[i % 2]
        if i == cursor:
            if not text.strip():
                text = text + f"[{show_token(chosen_text(tok))}]"
            style = "bold reverse"
        out.append(text, style=style or None)
    return out


def cursor_line(text: str, offset: int, width: int, console: Any) -> int:
    """Which wrapped line (of `text` drawn `width` cells wide) holds character `offset`."""
    line = pos = 0
    for para in text.split("\n"):
        chunks = Text(para).wrap(console, width) or [Text()]
        if offset <= pos + len(para):
            rel = offset - pos
            for chunk in chunks[:-1]:
                if rel < len(chunk.plain):
                    break
                rel -= len(chunk.plain)
                line += 1
            return line
        line += len(chunks)
        pos += len(para) + 1
    return max(line - 1, 0)
