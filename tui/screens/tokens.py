"""The tokens view: how the current prompt splits into tokens, and what the model is made of.

"The current prompt" is exactly what the next answer would be conditioned on: the system
prompt, the chat so far and the text in the input box (empty, an empty message: the least the next
prompt can be, as the chat's status line counts it), without the oldest turns that no longer fit,
through the chat template when the model has one (plain text joined by blank lines otherwise).
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tiankong.engine.errors import TiankongError
from tiankong.tui.widgets.candidates import show_token

_PARITY = ("on #253048", "on #3a2a48")  # alternating backgrounds: each token is one coloured run
FACT_WIDTH = 12  # cells of the model panel's fact names ("context length"), wrapped at words


def prompt_pieces(eng: Any, ids: list[int]) -> Text:
    """The prompt drawn token by token (specials in magenta brackets)."""
    out = Text()
    for n, i in enumerate(ids):
        if i in eng.tokenizer.special_ids:
            out.append(f"[{eng.tokenizer.id_to_piece(i)}]", style="bold magenta")
            continue
        text = eng.token_text(i)
        out.append(text.replace("\n", "↵\n") or "∅", style=_PARITY[n % 2])
    return out


def fact_text(key: str, value: Any) -> str:
    """One fact of Engine.info() as people read it; `tiankong info` and the f-key view share it. An
    unknown fact (a model with no BOS token) is the word none, not Python's None."""
    if value is None:
        return "none"
    if key == "parameters":
        from tiankong.engine.model_list import human_params  # `tiankong models` says them so too

        return f"{value:,} ({human_params(value)})"  # no space: a narrow panel wrapped "M)" alone
    if key == "bytes_per_token" and isinstance(value, int):
        from tiankong.engine.model_list import human_bytes  # the kv cache's unit too (Engine.info)

        return f"{human_bytes(value)} of weights read per decoded token"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def info_table(info: dict[str, Any]) -> Table:
    table = Table(show_header=False, show_edge=False, box=None, padding=(0, 1))
    # A long fact's name wraps between its words ("positional / encoding"), so that the values have
    # the room to keep a name whole: at 19 cells the names left "LlamaForCausalL / M". A value
    # longer than its column still folds rather than being cut.
    table.add_column("fact", style="dim", max_width=FACT_WIDTH)
    table.add_column("value", overflow="fold")
    for key, value in info.items():
        if key == "folder":  # long, and the status bar names the model
            continue
        table.add_row(key.replace("_", " "), Text(fact_text(key, value)))  # Text: a str cell is read as markup
    return table


def fit_parts(parts: list[Text], width: int) -> Text:
    """`parts` joined by " · ", a new line started before a part that would not fit `width` cells
    (a part longer than a line wraps by itself): a line cut mid-phrase ("… the next / answer's
    prompt") was hard to read at 80 columns."""
    out = Text()
    line = 0  # cells on the current line
    for part in parts:
        if line and line + 3 + part.cell_len > width:
            out.append("\n")
            line = 0
        elif line:
            out.append(" · ")
            line += 3
        out.append_text(part)
        line += part.cell_len
    return out


class TokensScreen(Screen[None]):
    CSS_PATH = "tokens.tcss"
    # The model panel runs past a short terminal's bottom (at 80x24 it ended at "dtype", the decode
    # row, what this view is for, below it): `m` takes the keys there, and its scroll keys reach it.
    BINDINGS = [
        Binding("escape,ctrl+t", "app.pop_screen", "back to chat"),
        Binding(
            "m",
            "model_panel",
            "model panel",
            tooltip="to the model panel (↑ ↓, pgup/pgdn, home/end scroll it: its last rows, the decode "
            "path among them, on a short terminal), and again back to the tokens",
        ),
    ]

    def __init__(
        self, eng: Any, messages: list[dict[str, str]], dropped: int = 0, max_new_tokens: int | None = None
    ) -> None:
        """messages: what the next answer reads; dropped: how many of the chat's oldest turns the
        context left out of them; max_new_tokens: the preset's, for the room the answer has (None:
        not said)."""
        super().__init__()
        self.eng, self.messages, self.dropped, self.max_new_tokens = eng, messages, dropped, max_new_tokens

    def compose(self) -> ComposeResult:
        try:
            ids = self.eng.encode(messages=self.messages) if self.messages else self.eng.encode(prompt="")
            error = ""
        except TiankongError as e:
            ids, error = [], str(e)
        self.ids, self.error = ids, error
        yield Static(self._head_text(self.app.size.width - 2), id="tokens-head")  # its margin: 1 a side
        with Horizontal():
            with Vertical(id="tokens-left"):
                with VerticalScroll(id="tokens-inline"):
                    yield Static(prompt_pieces(self.eng, ids))
                yield DataTable(id="tokens-table", cursor_type="row", zebra_stripes=True)
            info = VerticalScroll(Static(info_table(self.eng.info())), id="tokens-info")
            info.border_title = "model"
            yield info
        yield Footer()

    def _head_text(self, width: int) -> Text:
        """The line(s) over the tokens for a head `width` cells wide, or the error of a prompt that
        does not encode."""
        if self.error:
            return Text(self.error, style="bold red")
        return fit_parts(self._head_parts(len(self.ids)), width)

    def _head_parts(self, n: int) -> list[Text]:
        """The head's parts, in order: how many tokens, of the context, the room left for the answer,
        what the prompt is, and what it leaves out."""
        ctx = self.eng.cfg.max_seq_len
        template = "chat template" if self.eng.template is not None else "plain text (no chat template)"
        count = Text.assemble((f" {n} tokens ", "bold reverse"), "  ")
        if self.max_new_tokens is None:
            parts = [count.append(f"the next answer's prompt, as {template}")]
        else:
            most = min(self.max_new_tokens, ctx)  # a preset's above the context is used capped (f3, status line)
            room = max(0, min(most, ctx - n))
            answer = Text(f"answer room {room}", style="bold")
            if room < most:
                answer.append(f" (max tokens {most})", style="dim")
            parts = [count.append(f"prompt {n}/{ctx}", style="bold"), answer]
            parts.append(Text(f"the next answer's prompt, as {template}"))
        if self.dropped:
            turns = "turn" if self.dropped == 1 else f"{self.dropped} turns"
            parts.append(Text(f"without the chat's first {turns}, which no longer fit the context", style="dim"))
        return parts

    def action_model_panel(self) -> None:
        """Focus the model panel (its scroll keys then scroll it); from it, the tokens table."""
        panel = self.query_one("#tokens-info", VerticalScroll)
        (self.query_one(DataTable) if panel.has_focus else panel).focus()

    def on_resize(self, event: events.Resize) -> None:
        self.query_one("#tokens-head", Static).update(self._head_text(event.size.width - 2))

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("#", key="n")
        table.add_column("id", key="id")
        table.add_column("piece", key="piece")
        table.add_column("text", key="text")
        specials = self.eng.tokenizer.special_ids
        for n, i in enumerate(self.ids):
            piece = self.eng.tokenizer.id_to_piece(i)
            special = i in specials
            table.add_row(
                Text(str(n), justify="right"),
                Text(str(i), justify="right"),
                Text(piece, style="bold magenta" if special else ""),
                Text("special" if special else show_token(self.eng.token_text(i)), style="dim" if special else ""),
            )
        table.focus()
