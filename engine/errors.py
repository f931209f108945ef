"""User-facing errors.

Every problem a user can cause (a wrong path, a bad parameter, a broken file) is raised as a
subclass of `TiankongError`, whose message is one line that names the problem and the fix. The CLI
prints that line and exits with code 2; anything else is a bug and keeps its traceback.
`TiankongError` subclasses `ValueError` so library callers can catch bad input the usual way.
"""

from __future__ import annotations


class TiankongError(ValueError):
    """Bad user input: the message is one line that names the problem and the fix."""


class ModelLoadError(TiankongError):
    """A model folder cannot be loaded (missing files, unsupported architecture, bad tensors)."""


class TokenizerError(ModelLoadError):
    """A model folder has no usable tokenizer."""


class ChatTemplateError(TiankongError):
    """A chat template failed to render, or a template called raise_exception()."""


class ChatTemplateFault(ChatTemplateError):
    """The chat template itself failed (a bug in it, a limit it broke, text it wrote that is not text),
    not the messages it was given. A server answers it as its own error (500: the template is the one
    it loaded), where a plain ChatTemplateError, the template's raise_exception() refusing the
    messages, is the request's (400). `problem`: what the template did wrong, without where it came
    from or the fix (both the operator's to read, not an API client's)."""

    def __init__(self, message: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.problem = message if problem is None else problem


class InputError(TiankongError):
    """A prompt, an input file line, a preset or a sampling parameter is invalid."""


class ContextOverflow(InputError):
    """A prompt longer than the model's context can hold (a conversation's oldest turns may go)."""


class RemoteError(TiankongError):
    """A server behind --model http://... failed a request or answered something unusable."""


def quoted(text: object, limit: int = 200) -> str:
    """`text` from a stranger (a config value, a file name) made fit to quote in a one-line message:
    control and format characters removed (an ESC sequence would drive the terminal, a newline
    would break the one line, a bidi override would reorder it) and at most `limit` characters,
    ending in "…" when cut (a 100,000-character value is no message). Not wrapped in quotes."""
    import unicodedata

    raw = text if isinstance(text, str) else repr(text)
    kept: list[str] = []
    for ch in raw:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            continue
        if len(kept) == limit:
            kept[-1] = "…"
            break
        kept.append(ch)
    return "".join(kept)


def error_line(error: BaseException) -> str:
    """The first line of an exception's message (a library's, about a stranger's file), fit to quote in
    a one-line error (errors.quoted); "" when it has none."""
    return quoted(str(error).strip().partition("\n")[0])
