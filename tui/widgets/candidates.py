"""The candidates panel: the tokens the model weighed for one position, and what the preset did.

Each row is one candidate with two bars: its probability under the model's own distribution
(exp(logprob), temperature 1, nothing filtered) and under the preset's final sampling
distribution (p_sample). A candidate the preset filtered out (p_sample == 0) is marked ✗; the
token that was actually chosen is marked ▶ (and appended below when it came from outside the
top-K, which sampling allows). A token you picked with `b` in inspect mode (a branch) says so:
"picked (branch)", not "chosen", and not "cut" where the preset would have cut it. A server that does not report its sampling distribution (p_sample
None: vLLM, llama.cpp) gets "—" in the sample column and a line saying so.

Tokens are plain dicts, the same shape the store keeps:
{"id", "text", "logprob", "p_sample", "entropy", "top": [{"id", "text", "logprob", "p_sample"}]},
and "picked": true on a token picked for a branch (tui/screens/branch.py forced_token).
"""

from __future__ import annotations

import math
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.text import Text
from textual.geometry import Region
from textual.widget import Widget

MODEL_STYLE = "dodger_blue1"
SAMPLE_STYLE = "spring_green2"
_EIGHTHS = " ▏▎▍▌▋▊▉"


def token_dict(ev: Any) -> dict[str, Any]:
    """A TokenEvent as the plain dict the store keeps (TokenEvent.to_dict)."""
    return ev.to_dict()


def show_token(text: str) -> str:
    """A token's text made visible: spaces as ␣, newlines as ↵, tabs as →, nothing as ∅."""
    if text == "":
        return "∅"
    out = []
    for ch in text:
        if ch == " ":
            out.append("␣")
        elif ch == "\n":
            out.append("↵")
        elif ch == "\t":
            out.append("→")
        elif ord(ch) < 32 or 127 <= ord(ch) < 160:  # control characters (controls.py draws none)
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def bar(p: float, width: int) -> str:
    """A horizontal bar of `width` cells filled to p (eighth-cell resolution; any p > 0 shows)."""
    p = min(max(p, 0.0), 1.0)
    eighths = round(p * width * 8)
    if p > 0 and eighths == 0:
        eighths = 1
    full, rem = divmod(eighths, 8)
    return ("█" * full + (_EIGHTHS[rem] if rem else "")).ljust(width)[:width]


def pct(p: float | None) -> str:
    """Four cells: '100%', ' 41%', ' <1%', '  0%', and '   —' for unknown (None)."""
    if p is None:
        return "   —"
    if p <= 0:
        return "  0%"
    if p < 0.005:
        return " <1%"
    return f"{p * 100:3.0f}%"


def candidate_rows(token: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    """(candidate, is_chosen) rows: the top-K, plus the chosen token when it is not among them."""
    rows = [(c, c["id"] == token["id"]) for c in token.get("top") or []]
    if not any(chosen for _, chosen in rows):
        rows.append(
            (
                {"id": token["id"], "text": token["text"], "logprob": token["logprob"], "p_sample": token["p_sample"]},
                True,
            )
        )
    return rows


def was_picked(token: dict[str, Any]) -> bool:
    """Whether you picked this token (b in inspect mode) rather than the sampler. Branches stored before
    tokens were marked "picked" still tell when the pick was a token the preset cut: the sampler
    never draws one (p_sample 0)."""
    return bool(token.get("picked")) or (token["p_sample"] is not None and token["p_sample"] <= 0)


def chosen_text(token: dict[str, Any]) -> str:
    """What to show for the chosen token: its text, or its readable name when it adds no text (EOS)."""
    if token["text"]:
        return token["text"]
    for c in token.get("top") or []:
        if c["id"] == token["id"]:
            return c["text"] or ""
    return ""


class CandidatesPanel(Widget):
    """Shows one token's candidates; `show(token, label)` changes it."""

    # No wrapping: each line of the text is one row (`show` counts them to redraw only those), and a
    # line too long for the panel ends in "…" (the label is broken into lines of its own, label_lines).
    DEFAULT_CSS = """
    CandidatesPanel { width: 42; height: 1fr; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._token: dict[str, Any] | None = None
        self._label = ""
        self._hint = "send a message: each token's candidates show here as it streams"
        self._drawn: tuple[int, Text] | None = None  # (width, the token's text) built for it
        self._rows = 0  # rows the text drawn last covers (0: the hint, or nothing drawn yet)

    def show(self, token: dict[str, Any] | None, label: str = "") -> None:
        """Show `token`. While a chat streams this runs every frame, and the panel is taller than
        its text: only the rows the old or the new text covers are drawn again, not the blank
        ones below (the panel's drawing was most of a streaming chat's lines a frame)."""
        before = self._rows
        self._token, self._label = token, label
        self._drawn = None
        if token is None or not before:
            self.refresh()
        else:
            rows = len(self._content(self._width()).plain.split("\n"))
            self.refresh(Region(0, 0, self.content_size.width, max(before, rows)))

    def hint(self, text: str) -> None:
        """Shown while there is no token (e.g. before the first answer)."""
        self._hint = text
        if self._token is None:
            self.refresh()

    @property
    def token(self) -> dict[str, Any] | None:
        return self._token

    def _width(self) -> int:
        return max(self.content_size.width, 24)

    def render(self) -> Text:
        if self._token is None:
            self._rows = 0
            return hint_text(self._hint, self.content_size.width)
        text = self._content(self._width())
        self._rows = len(text.plain.split("\n"))
        return text

    def _content(self, width: int) -> Text:
        """The token's text at `width` cells, built once for each token and width."""
        if self._drawn is None or self._drawn[0] != width:
            self._drawn = (width, self._build(width))
        return self._drawn[1]

    def _build(self, width: int) -> Text:
        tok = self._token
        assert tok is not None
        out = Text(no_wrap=True, overflow="ellipsis")
        for line in label_lines(self._label, width):
            out.append(line + "\n", style="bold")
        p_model = math.exp(tok["logprob"])
        picked = was_picked(tok)
        out.append("picked (branch) " if picked else "chosen ", style="dim")
        out.append(show_token(chosen_text(tok)), style="bold reverse")
        out.append(f"  id {tok['id']}\n" if tok["id"] >= 0 else "\n", style="dim")  # < 0: a server sent no ids
        out.append("model ", style="dim")
        out.append(f"{p_model * 100:.1f}%", style=MODEL_STYLE)
        out.append("  sample ", style="dim")
        known = tok["p_sample"] is not None
        out.append(f"{tok['p_sample'] * 100:.1f}%\n" if known else "—\n", style=SAMPLE_STYLE)
        if not known:
            out.append("the server reports model logprobs only:\nits sampling distribution is unknown\n", style="dim")
        ent = tok.get("entropy")
        if ent is not None:
            out.append("entropy ", style="dim")
            out.append(f"{ent:.2f} nats", style="bold")
            choices = f" ≈ {math.exp(ent):.1f} choices"
            out.append((choices if len(f"entropy {ent:.2f} nats{choices}") <= width else "") + "\n", style="dim")
        # Columns: marker(2) token(tw), then twice: ' ' bar(bw) ' ' pct(4)
        bw = 6 if width >= 34 else 4 if width >= 28 else 3
        tw = max(4, width - 2 - 2 * (bw + 6))
        out.append("\n")
        out.append(set_cell_size("  token", 2 + tw), style="dim")
        out.append(set_cell_size(" model", bw + 6), style=f"dim {MODEL_STYLE}")
        out.append(set_cell_size(" sample", bw + 6) + "\n", style=f"dim {SAMPLE_STYLE}")
        top_ids = {c["id"] for c in tok.get("top") or []}
        for c, chosen in candidate_rows(tok):
            if chosen and c["id"] not in top_ids:
                outside = "picked from outside the top list" if picked else "sampled from outside the top list"
                out.append(f"  … {outside}\n", style="dim")
            _row(out, c, chosen, chosen and picked, tw, bw)
        out.rstrip()
        return out


def hint_text(hint: str, width: int) -> Text:
    """The hint broken into lines of at most `width` cells between words (the panel does not wrap: at
    34 columns "send a message: each token's candidat…" lost its end)."""
    text = Text(hint, style="dim")
    if width <= 0:
        return text
    return Text("\n", style="dim").join(text.wrap(Console(width=width), width))


def label_lines(label: str, width: int) -> list[str]:
    """The panel's label ("last of 256 tokens · f5 inspects all") in lines of at most `width` cells,
    broken between its " · " parts: the panel does not wrap (a wrapped line would shift every row
    below it, and `show` redraws only the rows it counts)."""
    lines: list[str] = []
    for part in label.split(" · ") if label else []:
        if lines and cell_len(lines[-1] + " · " + part) <= width:
            lines[-1] += " · " + part
        else:
            lines.append(part)
    return lines


def _row(out: Text, c: dict[str, Any], chosen: bool, picked: bool, tw: int, bw: int) -> None:
    """One candidate's line: marker, token (tw cells), model bar and %, sample bar and % (bw-cell
    bars); a cut candidate says "cut" in the sample column, or "picked" when you picked it all the same."""
    cut = c["p_sample"] is not None and c["p_sample"] <= 0
    marker = "▶ " if chosen else ("✗ " if cut else "  ")
    out.append(marker, style="bold yellow" if chosen else "red" if cut else "")
    name = show_token(c["text"])
    if cell_len(name) > tw:
        name = set_cell_size(name, tw - 1) + "…"
    out.append(set_cell_size(name, tw), style="bold" if chosen else "dim" if cut else "")
    p = math.exp(c["logprob"])
    out.append(" " + bar(p, bw), style=MODEL_STYLE)
    out.append(" " + pct(p), style="bold" if chosen else "")
    out.append(" ")
    if cut and picked:
        out.append(" " * (bw - 1) + "picked", style="bold yellow")
    elif cut:
        out.append(" " * bw + "  cut", style="dim red")
    elif c["p_sample"] is None:
        out.append(" " * bw + " " + pct(None), style="dim")
    else:
        out.append(bar(c["p_sample"], bw), style=SAMPLE_STYLE)
        out.append(" " + pct(c["p_sample"]), style="bold" if chosen else "")
    out.append("\n")
