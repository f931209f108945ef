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


class InputError(TiankongError):
    """A prompt, an input file line, a preset or a sampling parameter is invalid."""


class RemoteError(TiankongError):
    """A server behind --model http://... failed a request or answered something unusable."""
