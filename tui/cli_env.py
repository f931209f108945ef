"""How `tiankong` meets the environment it runs in: the terminal's encoding, whether there is a
terminal at all, and the compiled decode step that the first start builds.

- Standard output or error that cannot encode Unicode (LANG=C, PYTHONIOENCODING=latin-1): the help's
  填空 or a model's answer crashed a command with UnicodeEncodeError. A terminal now shows what it
  cannot encode as "?", with one note on stderr; a pipe or a file gets UTF-8 (JSON Lines' own
  encoding), so the records there stay whole and valid.
- Arguments under an ASCII locale: Python decodes argv's UTF-8 bytes with surrogateescape, and
  `-p 你好` was refused as "not UTF-8"; such arguments are decoded as UTF-8 again.
- The playground (chat, compare, rank) needs a terminal: with stdin or stdout redirected, Textual
  wrote escape sequences into the file and ran until killed.
- The compiled decode step (engine/native.py): its first build takes seconds, and without it
  decoding is several times slower. The engine prints nothing; the commands say both here.

Nothing here imports torch at module level: `main` calls `prepare` before every command.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, TextIO

from tiankong.engine.errors import InputError

# What a stream must be able to encode: the help's own words and the ellipsis of the log lines.
_SAMPLE = "填空…"


def prepare() -> None:
    """Make the process's text streams and arguments safe for any text (see the module's notes)."""
    sys.argv = utf8_args(sys.argv)
    encoding = fix_streams()
    if encoding is not None:
        # PYTHONIOENCODING wins over the locale, so the fix names the one that chose the encoding.
        fix = "PYTHONIOENCODING=utf-8" if os.environ.get("PYTHONIOENCODING") else "a UTF-8 locale (e.g. LC_ALL=C.UTF-8)"
        say(
            f"note: this terminal's encoding is {encoding}, so characters it cannot show are printed as ?; {fix} shows them"
        )


def _encodes(stream: TextIO) -> bool:
    try:
        _SAMPLE.encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _is_terminal(stream: Any) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, AttributeError):  # closed, or no such method (a test's stand-in)
        return False


def fix_streams() -> str | None:
    """Reconfigure stdout and stderr where they cannot encode Unicode: a terminal replaces what it
    cannot show, a pipe or file is written in UTF-8. Returns the terminal's encoding when a terminal
    was changed (its user gets a note), else None."""
    changed = None
    for stream in (sys.stdout, sys.stderr):
        if stream is None or _encodes(stream) or not hasattr(stream, "reconfigure"):
            continue
        if _is_terminal(stream):
            changed = changed or stream.encoding
            stream.reconfigure(errors="replace")
        else:
            stream.reconfigure(encoding="utf-8", errors="strict")
    return changed


def utf8_args(argv: list[str]) -> list[str]:
    """argv with each argument that Python decoded with surrogateescape (an ASCII locale reading
    UTF-8 bytes) decoded as UTF-8 again; an argument that is not UTF-8 either stays as it is (the
    command then refuses it, naming it)."""
    out = []
    for arg in argv:
        if any("\udc80" <= c <= "\udcff" for c in arg):
            try:
                arg = os.fsencode(arg).decode("utf-8")
            except UnicodeDecodeError:
                pass
        out.append(arg)
    return out


def need_terminal(command: str) -> None:
    """InputError unless stdin and stdout are a terminal: `command`'s screen reads keys and draws
    with escape sequences (under a redirect it wrote them into the file and never ended)."""
    if _is_terminal(sys.stdin) and _is_terminal(sys.stdout):
        return
    if command == "rank":
        raise InputError("rank needs a terminal (you rank with keys on its screen); run it in one")
    raise InputError(f"{command} needs a terminal; use `tiankong generate` for scripts")


# ---------------------------------------------------------------- the compiled decode step


def say(line: str) -> None:
    """One line on stderr (once per torchrun run: from rank 0 only)."""
    if os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr, flush=True)


def building_line(how: str) -> str:
    """What to say while the compiled step builds; `how` as engine/native.py's on_build gives it."""
    return f"building the compiled decode step ({how})…"


def announce_builds(say_line: Callable[[str], None] = say) -> None:
    """From now on, a build of the compiled step in this process is announced with `say_line` first."""
    from tiankong.engine import native  # here: it imports torch, which `presets` or `prefs` never need

    native.on_build(lambda how: say_line(building_line(how)))


def decode_notice(eng: Any) -> str | None:
    """The line for a local model on the CPU that decodes through torch because the compiled step
    did not build; None where it runs, was switched off (TIANKONG_NATIVE=0), or does not apply (a GPU,
    a server)."""
    if getattr(getattr(eng, "device", None), "type", None) != "cpu":
        return None
    from tiankong.engine import native

    why = native.reason()
    if why is None or native.switched_off() or str(getattr(eng, "decode_path", "")).startswith("compiled"):
        return None
    return (
        f"compiled step unavailable ({why}); decoding through torch, several times slower; `tiankong info` for details"
    )


def say_decode_notice(eng: Any) -> None:
    """decode_notice on stderr, if there is one (generate, serve)."""
    line = decode_notice(eng)
    if line is not None:
        say(f"note: {line}")
