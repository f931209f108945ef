"""Line breaking for Chinese and Japanese (kinsoku shori): closing punctuation such as "。" or "！"
never starts a line, and an opening bracket such as "「" never ends one.

Text without spaces is folded cell by cell by Rich's `divide_line`, which Textual's Content (Static,
the Markdown widget's blocks) and Rich's Text (the answers' previews) both use to wrap. `install()`
replaces that function in both: a break that would put a forbidden character at the start of a
line moves back, so the character before it goes down with it (the usual "push down" rule: the
line gets shorter, never longer), and the rest is divided again from there. A WORD JOINER (U+2060)
before the punctuation would not do: folding ignores it. Only where lines break changes; the text
is untouched, so copies and exports stay byte-exact.
"""

from __future__ import annotations

import rich._wrap
import rich.text
import textual.content

# Must not start a line: closing punctuation and brackets, small kana, prolonged sound mark (JIS X 4051, GB/T 15834).
NO_LINE_START = frozenset(
    "，。！？；：、．…‥・〜ー」』）》〉】〕〗〙〛］｝〞’”"
    "ぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿ"
    ",.!?;:)]}%"
)
# Must not end a line: opening brackets.
NO_LINE_END = frozenset("「『（《〈【〔〖〘〚［｛〝‘“")


def _allowed(text: str, b: int) -> bool:
    """Whether a line may start at character index b (a fold inside a run of text without spaces)."""
    return text[b - 1].isspace() or (text[b] not in NO_LINE_START and text[b - 1] not in NO_LINE_END)


def kinsoku_divide_line(text: str, width: int, fold: bool = True) -> list[int]:
    """Rich's divide_line (character indices where new lines start), with each break that would put
    a forbidden character at a line's start (or an opener at its end) moved back, then the rest of
    the text divided again from there. A break that cannot move back without emptying its line stays."""
    breaks = rich._wrap.divide_line(text, width, fold)
    done: list[int] = []
    while breaks:
        bad = next((i for i, b in enumerate(breaks) if not _allowed(text, b)), None)
        if bad is None:
            return done + breaks
        done += breaks[:bad]
        prev, b = (done[-1] if done else 0), breaks[bad]
        c = b
        while c - 1 > prev and not _allowed(text, c):
            c -= 1
        if c - 1 <= prev and not _allowed(text, c):
            c = b  # no better place on this line
        done.append(c)
        breaks = [c + r for r in rich._wrap.divide_line(text[c:], width, fold)]
    return done


def install() -> None:
    """Make Rich's Text and Textual's Content wrap with kinsoku (idempotent)."""
    for module in (rich.text, textual.content):
        module.divide_line = kinsoku_divide_line
