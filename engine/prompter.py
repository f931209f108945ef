"""`Prompter`: a model's text side (its config, tokenizer and chat template) without its weights.

    text = load_prompter("path/to/model")             # config.json + tokenizer + template, no weights
    ids = text.encode(messages=[{"role": "user", "content": "Hi"}])
    text.check_fits(ids, 256)                         # ContextOverflow where it leaves no room
    eng = Engine.load("path/to/model", tokenizer=text.tokenizer)   # the same ids, the weights now

Prompts are encoded and checked against the context before the weights load, which for a model of
some GB takes seconds to minutes: `tiankong generate` reads a whole file of them first, so a line
too long for the context is said at once. `Engine` has the same encode, fit and check_fits
(PromptEncoder, which both are), so the ids and refusals are the same either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .chat import ChatTemplate, render_prompt
from .config import ModelConfig
from .context import answer_room, fit_messages, too_long, too_many_chars
from .errors import InputError
from .files import check_text
from .gguf_model import GGUFModel, is_gguf
from .request_checks import a_type, check_count, check_flag
from .resolve import resolve_model
from .tokenizer import Tokenizer, check_token_ids, load_tokenizer


def tokenizer_and_template(
    folder: Path,
    gguf: GGUFModel | None,
    cfg: ModelConfig,
    chat_template: str | Path | None,
    tokenizer: Tokenizer | None = None,
) -> tuple[Tokenizer, ChatTemplate | None]:
    """A model's tokenizer (checked against its vocabulary) and chat template: the GGUF file's
    metadata or the folder's files; `chat_template`, a file, replaces the model's template.
    `tokenizer`: the model's own, loaded already (Engine.load's argument), so not loaded again."""
    if tokenizer is None:
        tokenizer = gguf.tokenizer() if gguf else load_tokenizer(folder)
    check_token_ids(tokenizer, cfg.vocab_size, folder)
    if chat_template is not None:
        return tokenizer, ChatTemplate.from_file(chat_template, tokenizer)
    return tokenizer, gguf.chat_template(tokenizer) if gguf else ChatTemplate.from_folder(folder, tokenizer)


def _chars(texts: Sequence[Any]) -> int:
    """Characters of the texts among `texts` (a message's content may be something else)."""
    return sum(len(t) for t in texts if isinstance(t, str))


class PromptEncoder:
    """encode, fit and check_fits: what needs a model's config, tokenizer and chat template and no
    weights, the same for a Prompter and an Engine (both dataclasses with these fields)."""

    cfg: ModelConfig
    tokenizer: Tokenizer
    template: ChatTemplate | None
    _longest_token: int  # characters; 0 = not measured yet

    def encode(
        self,
        prompt: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        raw: bool = False,
        *,
        max_new_tokens: int | None = None,
    ) -> list[int]:
        """Prompt text or chat messages -> ids, through the chat template unless raw (or none).

        Text that is not text (lone surrogates: bytes that were not UTF-8) is refused, and so is a
        prompt too long in characters for any tokenization of it to fit the context: that is counted
        before the template and the tokenizer run, so a 50 MB prompt costs no gigabytes to refuse.
        max_new_tokens: the answer's length, for the length that refusal names as the fix (as check_fits).
        """
        raw = check_flag("raw", raw)
        if max_new_tokens is not None:
            max_new_tokens = check_count("max_new_tokens", max_new_tokens, 1)
        if messages is None:
            self._check_text([prompt], max_new_tokens, "the prompt")
        else:
            contents = [m.get("content") for m in messages if isinstance(m, Mapping)]
            self._check_text(contents, max_new_tokens, "the conversation")
        ids = render_prompt(self.template, self.tokenizer, prompt=prompt, messages=messages, raw=raw)
        if not ids:
            # Tokenizers that add no BOS (GPT-2) still have a start-of-text token to begin from.
            start = (
                self.tokenizer.bos_id
                if self.tokenizer.bos_id is not None
                else next(iter(sorted(self.tokenizer.eos_ids)), None)
            )
            if start is None:
                raise InputError("empty prompt and the model has no BOS token to start from; give some text")
            ids = [start]
        return ids

    def fit(
        self,
        messages: Sequence[Mapping[str, Any]],
        max_new_tokens: int,
        *,
        at_least: int = 0,
        slack: int = 0,
        raw: bool = False,
    ) -> tuple[list[int], int]:
        """Chat messages -> (ids, oldest turns dropped) so that the prompt leaves the answer its room
        (context.answer_room); see context.fit_messages for at_least and slack."""
        ctx = self.cfg.max_seq_len
        # Turns that encode would refuse unread go by their characters first (a 27 MB chat is never encoded whole).
        long = _chars([m.get("content") for m in messages if isinstance(m, Mapping)]) > 16 * ctx
        return fit_messages(
            lambda m: self.encode(messages=m, raw=raw, max_new_tokens=max_new_tokens),
            messages,
            ctx - answer_room(check_count("max_new_tokens", max_new_tokens, 1), ctx),
            at_least=check_count("at_least", at_least, 0),
            slack=check_count("slack", slack, 0),
            max_chars=self._char_limit() if long else None,
            context=ctx,
        )

    def check_fits(self, ids: Sequence[int], max_new_tokens: int | None = None) -> None:
        """Raise ContextOverflow unless the prompt leaves room for at least one new token in the
        context; with max_new_tokens, the length it names as the fix leaves the answer its room."""
        ctx = self.cfg.max_seq_len
        if len(ids) >= ctx:
            raise too_long(len(ids), ctx, max_new_tokens)

    def _check_text(self, texts: Sequence[Any], max_new_tokens: int | None, what: str) -> None:
        ctx = self.cfg.max_seq_len
        chars = _chars(texts)
        if chars > 16 * ctx and chars > self._char_limit():
            raise too_many_chars(chars, ctx, max_new_tokens, what)
        for t in texts:
            if isinstance(t, str):
                check_text(t)

    def _char_limit(self) -> int:
        """Characters past which a prompt cannot fit the context, refused before it is tokenized: no
        token stands for more characters than its longest vocabulary entry (x2: a normalizer may merge
        characters). Up to 16 per token is let through whatever the vocabulary: cheap to tokenize."""
        ctx = self.cfg.max_seq_len
        return max(16 * ctx, 2 * ctx * self._max_token_chars())

    def _max_token_chars(self) -> int:
        """The longest vocabulary entry in characters (measured once; an upper bound on a token's text)."""
        if not self._longest_token:
            longest = 1
            for i in range(self.tokenizer.vocab_size):
                try:
                    longest = max(longest, len(self.tokenizer.id_to_piece(i)))
                except (IndexError, KeyError, TypeError):  # ids the tokenizer leaves unassigned
                    continue
            self._longest_token = longest
        return self._longest_token


@dataclass
class Prompter(PromptEncoder):
    """A model's text side, loaded without its weights (load_prompter)."""

    cfg: ModelConfig
    tokenizer: Tokenizer
    template: ChatTemplate | None
    folder: Path
    _longest_token: int = field(default=0, init=False, repr=False)


def check_template_path(chat_template: object) -> None:
    """chat_template is a path (str or Path) or None; template text in its place is refused by name
    (it would otherwise be read as a file name, "cannot read {% for ...")."""
    if chat_template is None:
        return
    if not isinstance(chat_template, (str, Path)):
        raise InputError(f"chat_template must be a file path (str or Path), got {a_type(chat_template)}")
    text = str(chat_template)
    if ("{%" in text or "{{" in text or "\n" in text) and not os.path.exists(os.path.expanduser(text)):
        raise InputError(
            "chat_template is the path of a template file, not the template's text; "
            "save the template to a file (e.g. template.jinja) and pass its path"
        )


def check_tokenizer(tokenizer: object) -> None:
    """A tokenizer handed to a load is a Tokenizer (load_checked_tokenizer) or None."""
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        raise InputError(f"tokenizer must be a Tokenizer (load_checked_tokenizer) or None, got {a_type(tokenizer)}")


def load_prompter(
    folder: str | Path | None = None, chat_template: str | Path | None = None, tokenizer: Tokenizer | None = None
) -> Prompter:
    """A model's Prompter, from its config (config.json or a GGUF file's metadata), tokenizer and chat
    template, as Engine.load reads them, without reading a byte of the weights. `folder`, `chat_template`
    and `tokenizer` as Engine.load takes them; pass `tokenizer=prompter.tokenizer` to Engine.load after,
    so that it is not loaded twice. Raises ModelLoadError (or a tokenizer's or template's error) in one line;
    a folder without weight files as Engine.load does (their names only are looked at): `tiankong generate`
    said an input file's refused lines first, and only the run after them that the model cannot load."""
    check_tokenizer(tokenizer)
    check_template_path(chat_template)
    folder = resolve_model(folder)
    gguf = GGUFModel(folder) if is_gguf(folder) else None
    if gguf is not None:
        cfg = gguf.config()
    else:
        from .model import check_folder  # (torch: imported only here)
        from .weight_files import checkpoint_files

        cfg = ModelConfig.from_folder(check_folder(folder))
        checkpoint_files(folder)  # after the config, in Engine.load's order
    return Prompter(cfg, *tokenizer_and_template(folder, gguf, cfg, chat_template, tokenizer), folder)
