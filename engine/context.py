"""What of a conversation the model sees (`fit_messages`), and what it has already read (`PromptCache`).

The context window is finite. When a conversation no longer fits, with room left for an answer,
`fit_messages` drops its oldest turns (a turn: a user message and the replies after it), never the
system message and never the last turn; the TUI chat, `tiankong generate --context-overflow
truncate` and the PPO trainer's prompts all go through it. How much room an answer needs is
`answer_room`: its max_new_tokens, but at most a quarter of the context, so that a preset asking
for 512 tokens on a 512-token model still leaves the conversation three quarters.

A chat re-reads its whole history every turn unless the keys and values of what it read last time
are kept: `PromptCache` holds one row's KV cache and the ids whose keys and values it holds, and
`generate(..., prompt_cache=...)` prefills only the part of the new prompt after the longest common
prefix. Keys and values depend only on the tokens before them, so this is exact (a sliding window
too: the cache keeps every position and the mask hides the old ones). A prompt whose start changed
(a turn dropped, the system prompt edited) shares only what precedes the change, and is read once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, Sized, TypeVar

from .errors import ContextOverflow, InputError, TiankongError

# torch, numpy and the KV cache are imported where PromptCache and PrefixStore use them: fit_messages and
# drop_turns also serve a server's model (remote.py) and `tiankong rank`, which never need torch.
if TYPE_CHECKING:
    import numpy as np
    import torch

    from .config import ModelConfig
    from .kv_cache import KVCache

Messages = Sequence[Mapping[str, Any]]
# A rendered prompt: token ids here, a server's counted messages in remote.py; only its len() is read.
P = TypeVar("P", bound=Sized)


def answer_room(max_new_tokens: int, context: int) -> int:
    """Tokens kept free for the answer: max_new_tokens, at most a quarter of the context."""
    return max(1, min(max_new_tokens, context // 4))


def too_long(tokens: int, context: int, max_new_tokens: int | None = None) -> ContextOverflow:
    """The error for a prompt of `tokens` that fills the context: the most it may hold to leave the
    answer its room (answer_room of max_new_tokens, as a chat's prompt leaves; None: unknown, one
    token). "at most 511" of 512 for a 20-token answer pointed at a prompt that left it one."""
    return ContextOverflow(
        f"the prompt is {tokens} tokens but the model's context is {context}; "
        f"{_shorten(context, _room(max_new_tokens, context), 'at most')}"
    )


def too_many_chars(
    chars: int, context: int, max_new_tokens: int | None = None, what: str = "the prompt"
) -> ContextOverflow:
    """The error for a prompt refused by its characters before it is tokenized (`what`: "the
    prompt", or "the conversation" for chat messages), with the length to aim for as too_long names
    it: "about", since how many tokens its text makes is not counted."""
    return _chars_refusal(f"{what} is {chars:,} characters", context, _room(max_new_tokens, context))


def _chars_refusal(size: str, context: int, room: int | None, part: str = "it") -> ContextOverflow:
    """The refusal by characters, one wording for a prompt (too_many_chars) and for the part of a
    conversation that always stays (fit_messages): `size` says what holds how many characters,
    `part` what to shorten, to the length `_shorten` names."""
    return ContextOverflow(
        f"{size}, far more than the model's context of {context} tokens can hold; "
        f"{_shorten(context, room, 'about', part)}"
    )


def _room(max_new_tokens: int | None, context: int) -> int | None:
    """The answer's room (answer_room), None where max_new_tokens is unknown."""
    return answer_room(max_new_tokens, context) if max_new_tokens is not None else None


def _shorten(context: int, room: int | None, bound: str, part: str = "it") -> str:
    """The fix for a prompt too long for `context`: the tokens `part` may hold, leaving the answer its
    `room` (None: unknown, one token, not said)."""
    leaving = f", which leaves {room} for the answer" if room is not None else ""
    return f"shorten {part} to {bound} {context - (room or 1)} tokens{leaving}"


def turn_starts(messages: Messages) -> list[int]:
    """Index of the first message of every turn: each user message (and anything before the first
    one that is not a system message) starts a turn."""
    starts: list[int] = []
    for i, m in enumerate(messages):
        if m.get("role") == "system" and not starts:
            continue
        if m.get("role") == "user" or not starts:
            starts.append(i)
    return starts


def drop_turns(messages: Messages, k: int) -> list[Mapping[str, Any]]:
    """The messages without their k oldest turns (the system messages at the start always stay, and
    so does the last turn)."""
    messages = list(messages)
    starts = turn_starts(messages)
    if not starts:
        return messages
    k = min(k, len(starts) - 1)
    return messages[: starts[0]] + messages[starts[k] :]


def fit_messages(
    encode: Callable[[list[Mapping[str, Any]]], P],
    messages: Messages,
    budget: int,
    *,
    at_least: int = 0,
    slack: int = 0,
    max_chars: int | None = None,
    context: int | None = None,
) -> tuple[P, int]:
    """Messages -> (prompt ids of at most `budget` tokens, number of oldest turns dropped).

    encode renders messages to ids (the chat template and tokenizer). The system messages at the
    start and the last turn always stay; the turns between go oldest first. at_least: drop at least
    this many (a chat keeps dropped turns dropped, so its prompt keeps one prefix and its cache stays
    valid). slack: when more turns must go than at_least, free this many tokens more, so that the
    next few turns fit without dropping again (each drop re-reads the whole prompt once).
    max_chars: messages holding more characters than this cannot fit (encode refuses them
    unencoded); turns go by that count first, so that a 27 MB conversation is never encoded whole.
    context: the model's context, of which the budget is the prompt's part and the rest the answer's;
    given with max_chars, for the length that its refusal names (as too_many_chars names it).
    Raises ContextOverflow when the system messages and the last turn alone do not fit.
    """
    messages = list(messages)
    starts = turn_starts(messages)
    droppable = max(0, len(starts) - 1)
    at_least = min(at_least, droppable)
    if max_chars is not None:
        if context is None:
            raise ValueError("fit_messages: max_chars needs context (the model's), for the length its refusal names")
        at_least = _fewest_within(messages, starts, at_least, max_chars, (context, context - budget))

    def without(k: int) -> P:  # the prompt without the k oldest turns
        return encode(drop_turns(messages, k))

    ids = without(at_least)
    if len(ids) <= budget:
        return ids, at_least
    # Dropping more turns never lengthens the prompt: binary search for the fewest that fit,
    # first within budget - slack, else within the budget.
    for limit in dict.fromkeys((budget - slack, budget)):
        lo, hi, best = at_least + 1, droppable, None
        while lo <= hi:
            mid = (lo + hi) // 2
            cand = without(mid)
            if len(cand) <= limit:
                best, hi = (cand, mid), mid - 1
            else:
                lo = mid + 1
        if best is not None:
            return best
    raise _too_long(encode, messages, starts, len(without(droppable)), budget)


def _chars(m: Any) -> int:
    """Characters of one message's text (what Engine.encode counts against the context)."""
    content = m.get("content") if isinstance(m, Mapping) else None
    return len(content) if isinstance(content, str) else 0


def _fewest_within(messages: list, starts: list[int], at_least: int, max_chars: int, limit: tuple[int, int]) -> int:
    """The fewest oldest turns (at least at_least) to drop for the rest to hold at most max_chars
    characters; ContextOverflow when the system messages and the last turn alone hold more, naming
    the length to shorten them to by `limit` (the model's context, the answer's room in it)."""
    sizes = [_chars(m) for m in messages]
    head = sum(sizes[: starts[0]]) if starts else sum(sizes)
    rest = sum(sizes[starts[0] :]) if starts else 0  # the turns kept when none is dropped
    k = 0
    while k < len(starts) - 1 and (k < at_least or head + rest > max_chars):
        rest -= sum(sizes[starts[k] : starts[k + 1]])
        k += 1
    if head + rest > max_chars:
        parts = _Parts(messages, starts, head, rest)
        raise _chars_refusal(f"{parts.subject} {head + rest:,} characters{parts.split}", *limit, parts.which(max_chars))
    return k


def _too_long(encode: Callable, messages: list, starts: list[int], total: int, budget: int) -> ContextOverflow:
    """The error for a system message and last turn that alone exceed the budget, naming the part to
    shorten: the last turn's own length is encoded; the system message's is the rest."""
    last = total
    if starts and starts[0] > 0:
        try:
            last = len(encode(messages[starts[-1] :]))
        except TiankongError:  # a template that wants its system message: the two are said together
            last = -1
    parts = _Parts(messages, starts, total - last if last >= 0 else -1, last)
    return ContextOverflow(
        f"{parts.subject} {total:,} tokens{parts.split}, but the context leaves {budget} for the prompt "
        f"(room kept for the answer); shorten {parts.which(budget)}"
    )


class _Parts:
    """What always stays of a conversation, for the message that says it does not fit: the system
    messages (head: their size, 0 for none, -1 unknown) and the last turn (last: its size, or -1)."""

    def __init__(self, messages: list, starts: list[int], head: int, last: int) -> None:
        self.head, self.last = (head, last) if starts else (last + head, 0)  # all system messages
        one = not starts or len(messages) - starts[-1] == 1
        self.last_name = "the last message" if one else "the last turn"
        if not starts:
            self.subject, self.last_name = "the system message is", ""
        elif starts[0] == 0:
            self.subject = f"{self.last_name} is"
        else:
            self.subject = f"the system message and {self.last_name} are"

    @property
    def split(self) -> str:
        """The two sizes, where there are two and both are known."""
        if self.head > 0 and self.last >= 0 and self.last_name:
            return f" (the system message {self.head:,}, {self.last_name} {self.last:,})"
        return ""

    def which(self, limit: int) -> str:
        """The part to shorten: the one longer than the limit alone, both, or either of the two."""
        if not self.last_name or self.head == 0:
            return self.last_name or "the system message"
        if self.head > limit and self.last > limit:
            return "both"
        if self.head > limit:
            return "the system message"
        if self.last > limit:
            return self.last_name
        return f"the system message or {self.last_name}"


class PromptCache:
    """The KV cache of one conversation (one row) kept between `generate` calls.

    `ids` are the tokens whose keys and values sit in cache slots 0..len(ids)-1: a prompt and the
    answer tokens that were fed back. `generate` keeps that true at every step, so a cancelled or
    failed answer leaves a cache that is still valid up to where it got. The buffer grows (doubling,
    up to the context) as the conversation does, and is rebuilt for another model.

    One generate call at a time uses it: a call reads and writes the one buffer at every step, so a
    second call (another thread, or a second generator while the first is paused) would overwrite
    the keys and values the first one still decodes from. `generate` claims the cache when it is
    called and releases it when its generator finishes, fails, is closed or is garbage-collected;
    a call made meanwhile raises InputError.
    """

    def __init__(self) -> None:
        self.kv: KVCache | None = None
        self.ids: list[int] = []
        self._model_id = 0
        self._busy = threading.Lock()  # held by the generate call using the cache (claim/release)

    @property
    def in_use(self) -> bool:
        """Whether a generate call holds the cache now (its generator is not finished or closed)."""
        return self._busy.locked()

    def claim(self) -> None:
        """Take the cache for one generate call; InputError if another call holds it."""
        if not self._busy.acquire(blocking=False):
            raise InputError(
                "this PromptCache is in use by another generate() call that has not finished; finish or "
                "close() that generator first (or wait for its thread), or give this call its own PromptCache"
            )

    def release(self) -> None:
        """Give the cache back (the call's generator ended); a Lock may be released from any thread,
        as the garbage collector may close the generator on another one."""
        assert self._busy.locked(), "release() without claim()"
        self._busy.release()

    @classmethod
    def holding(cls, model: torch.nn.Module, ids: Sequence[int], kv: KVCache) -> PromptCache:
        """A cache for `model` whose buffer `kv` already holds the keys and values of `ids`."""
        pc = cls()
        pc.kv, pc.ids, pc._model_id = kv, list(ids), id(model)
        return pc

    def clear(self) -> None:
        self.ids = []

    def reset(self) -> None:
        """Forget the buffer too (after non-finite values may have been written into it)."""
        self.kv, self.ids = None, []

    def reuse(self, prompt: Sequence[int]) -> int:
        """How many leading tokens of `prompt` are cached: the longest common prefix, less one, as
        the last prompt token must run again to give the first answer token's logits."""
        n = 0
        for a, b in zip(self.ids, prompt, strict=False):
            if a != b:
                break
            n += 1
        return min(n, len(prompt) - 1)

    def prepare(
        self, model: torch.nn.Module, cfg: ModelConfig, prompt: Sequence[int], total: int
    ) -> tuple[KVCache, int]:
        """A cache of at least `total` slots holding `prompt`'s longest cached prefix -> (cache, its length)."""
        from .kv_cache import KVCache, kv_dtype

        p, dtype = next(model.parameters()), kv_dtype(model)
        kv = self.kv
        if kv is not None and (self._model_id != id(model) or kv.kv.dtype != dtype or kv.kv.device != p.device):
            kv, self.ids = None, []  # another model: nothing cached applies
        keep = self.reuse(prompt)
        self.ids = self.ids[:keep]  # slots past here are about to be overwritten
        if kv is None or kv.max_len < total:
            size = min(cfg.max_seq_len, max(total, 2 * kv.max_len if kv is not None else 0))
            grown = KVCache(cfg.n_layers, 1, cfg.n_kv_heads, size, cfg.head_dim, dtype, p.device)
            if kv is not None and keep:
                grown.kv[:, :, :, :keep] = kv.kv[:, :, :, :keep]
            kv, self._model_id = grown, id(model)
        self.kv = kv
        return kv, keep


class PrefixStore:
    """Keys and values of recently read token sequences, one row each, within `max_bytes`.

    An entry is a sequence of ids and its keys and values (n_layers, 2 H_kv, len, hd): what a row
    held when its prompt was read or its answer ended. `longest` finds the entry that shares the
    most leading tokens with a new prompt; a prefill then starts there (prefill._prefill with a
    PromptCache made by `cache_for`). Exact for the same reason PromptCache is.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise InputError(f"the prefix cache size must be at least 0 bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0  # prefills that started from an entry
        self.tokens_reused = 0  # prompt tokens those prefills did not read
        self._entries: OrderedDict[tuple[int, ...], tuple[np.ndarray, torch.Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, prompt: Sequence[int]) -> tuple[int, torch.Tensor | None]:
        """(n, kv) of the entry sharing the longest prefix with `prompt`: n tokens, at most
        len(prompt) - 1 (the last prompt token must run to give the logits); (0, None) if none."""
        import numpy as np

        ids = np.asarray(prompt, dtype=np.int64)
        best, best_key = 0, None
        for key, (stored, _) in self._entries.items():
            m = min(len(stored), len(ids) - 1)
            if m <= best:
                continue
            differ = np.flatnonzero(stored[:m] != ids[:m])
            n = int(differ[0]) if len(differ) else m
            if n > best:
                best, best_key = n, key
        if best_key is None:
            return 0, None
        self._entries.move_to_end(best_key)
        return best, self._entries[best_key][1]

    def put(self, ids: Sequence[int], kv: torch.Tensor) -> None:
        """Keep a copy of kv (n_layers, 2 H_kv, len(ids), hd) for `ids`. An entry that is a prefix of
        ids is superseded; ids that are a prefix of an entry add nothing."""
        import numpy as np

        key = tuple(ids)
        assert kv.shape[2] == len(key), f"{kv.shape[2]} slots of keys and values for {len(key)} ids"
        size = kv.numel() * kv.element_size()
        if not key or size > self.max_bytes:
            return
        for other in list(self._entries):
            if len(other) >= len(key) and other[: len(key)] == key:
                self._entries.move_to_end(other)
                return
            if other == key[: len(other)]:
                self._drop(other)
        self._entries[key] = (np.asarray(key, dtype=np.int64), kv.clone())
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def cache_for(
        self, model: torch.nn.Module, prompt: Sequence[int], n: int, kv: torch.Tensor, size: int
    ) -> PromptCache:
        """A PromptCache of `size` slots holding the first n tokens of `prompt` (kv: the keys and
        values `longest` returned)."""
        from .kv_cache import KVCache, kv_dtype

        p = next(model.parameters())
        L, H2, _, hd = kv.shape
        cache = KVCache(L, 1, H2 // 2, max(size, n), hd, kv_dtype(model), p.device)
        cache.kv[:, 0, :, :n] = kv[:, :, :n]
        self.hits, self.tokens_reused = self.hits + 1, self.tokens_reused + n
        return PromptCache.holding(model, prompt[:n], cache)

    def _drop(self, key: tuple[int, ...]) -> None:
        _, kv = self._entries.pop(key)
        self.bytes -= kv.numel() * kv.element_size()
