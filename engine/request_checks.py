"""The argument checks of a generate call (`Engine.generate`, `generate.generate`, `Batcher.submit`).

They run when the call is made, before any token is read, so a wrong argument is one InputError
naming the argument and the fix, raised where the caller made the mistake, not a TypeError or an
IndexError from deep inside the model at the first `next()`. The likely mistakes are text where
ids go (`eng.generate(["Once upon"], ...)`), one prompt where a list of prompts goes, and ids from
another tokenizer; a numpy array or a torch tensor of ids is taken as the list of ints it holds.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence, Union

import numpy as np
import torch

from .errors import InputError, quoted
from .params import SamplingParams

# encode(text) goes through the model's chat template: plain text needs raw=True.
_ENCODE = "pass token ids from eng.encode(text, raw=True) (or eng.encode(messages=...) for a chat)"

# One prompt's token ids as generate takes them: a list (eng.encode's), or a 1-D integer array or tensor.
TokenIds = Union[Sequence[int], np.ndarray, torch.Tensor]


def token_id_lists(prompts: Any, vocab_size: int) -> list[list[int]]:
    """prompts (a list of prompts, each a sequence of token ids) -> a list of lists of ints, each id
    in [0, vocab_size). Raises InputError naming the first bad prompt (as prompts[i]) and the fix."""
    if isinstance(prompts, (str, bytes)):
        raise InputError(f"prompts is {a_type(prompts)}; {_ENCODE} and pass a list of them, e.g. [ids]")
    if isinstance(prompts, (np.ndarray, torch.Tensor)) and prompts.ndim != 2:
        raise InputError(f"prompts is a {prompts.ndim}-D array; pass a list of prompts, each a list of token ids")
    if not isinstance(prompts, (Sequence, np.ndarray, torch.Tensor)):
        raise InputError(f"prompts must be a list of prompts (lists of token ids), got {_what(prompts)}")
    return [token_ids(p, vocab_size, f"prompts[{i}]") for i, p in enumerate(prompts)]


def token_ids(ids: Any, vocab_size: int, name: str = "the prompt") -> list[int]:
    """One prompt's ids -> a list of ints in [0, vocab_size); `name` says which prompt in messages."""
    if isinstance(ids, (np.ndarray, torch.Tensor)):
        ids = _array_ids(ids, name)
    elif isinstance(ids, (str, bytes)):
        raise InputError(f"{name} is {a_type(ids)}, not token ids; {_ENCODE}")
    elif isinstance(ids, numbers.Integral):
        raise InputError(f"{name} is one int, not a list of token ids; pass a list of prompts, e.g. [ids]")
    elif not isinstance(ids, Sequence):
        raise InputError(f"{name} must be a list of token ids, got {_what(ids)}; {_ENCODE}")
    if not all(type(i) is int for i in ids):  # the usual case is checked in one pass; others converted
        ids = [_as_id(i, name, at) for at, i in enumerate(ids)]
    if ids and not (0 <= min(ids) and max(ids) < vocab_size):
        at, bad = next((at, i) for at, i in enumerate(ids) if not 0 <= i < vocab_size)
        raise InputError(
            f"{name} has token id {bad} at index {at}, outside the vocabulary [0, {vocab_size - 1}]; "
            f"{_ENCODE} with this model's tokenizer"
        )
    return list(ids)


def check_params(params: Any, n_prompts: int) -> list[SamplingParams]:
    """params: one SamplingParams per prompt -> them as a list, each validated again (construction
    validates, but object.__setattr__ can still change a frozen dataclass)."""
    if isinstance(params, SamplingParams):
        raise InputError("params must be a list with one SamplingParams per prompt, e.g. [params]")
    if isinstance(params, (str, bytes, dict)) or not isinstance(params, Sequence):
        raise InputError(f"params must be a list of SamplingParams, one per prompt, got {_what(params)}")
    for i, p in enumerate(params):
        if isinstance(p, dict):
            raise InputError(f"params[{i}] is a dict; pass SamplingParams(**that_dict)")
        if not isinstance(p, SamplingParams):
            raise InputError(f"params[{i}] must be a SamplingParams, got {_what(p)}")
        p.validate()
    if len(params) != n_prompts:
        raise InputError(f"{n_prompts} prompts but {len(params)} parameter sets; give one per prompt")
    return list(params)


def check_top_logprobs(top_logprobs: Any, vocab_size: int) -> int:
    """top_logprobs -> an int in [0, vocab_size] (numpy ints too)."""
    if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, numbers.Integral):
        raise InputError(f"top_logprobs must be an integer in [0, {vocab_size}], got {_what(top_logprobs)}")
    k = int(top_logprobs)
    if not 0 <= k <= vocab_size:
        raise InputError(f"top_logprobs must be in [0, {vocab_size}], got {k}")
    return k


def check_cancel(cancel: Any) -> None:
    """cancel: None, or an event the caller sets from another thread (anything with is_set())."""
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise InputError(f"cancel must be a threading.Event (set it from another thread to stop), got {_what(cancel)}")


def check_flag(name: str, value: Any) -> bool:
    """A True/False argument: "no" or 0 is refused, not read as its truth ("no" is true)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {_what(value)}")
    return bool(value)


def check_count(name: str, value: Any, low: int) -> int:
    """An integer argument of at least `low` (numpy integers too; not a bool, not text)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InputError(f"{name} must be an integer of at least {low}, got {_what(value)}")
    return int(value)


def _array_ids(a: np.ndarray | torch.Tensor, name: str) -> list[int]:
    """A 1-D integer array or tensor of ids -> a list of ints."""
    if isinstance(a, np.ndarray):
        integer = bool(np.issubdtype(a.dtype, np.integer))
    else:
        integer = not (a.dtype.is_floating_point or a.dtype.is_complex or a.dtype == torch.bool)
    if a.ndim != 1 or not integer:
        raise InputError(f"{name} is a {a.ndim}-D array of {a.dtype}; give a 1-D array of integer token ids")
    return [int(i) for i in a.tolist()]


def _as_id(i: Any, name: str, at: int) -> int:
    if isinstance(i, (np.ndarray, torch.Tensor)) and i.ndim == 0:  # list(tensor) gives 0-D tensors
        i = i.item()
    if isinstance(i, bool) or not isinstance(i, numbers.Integral):
        raise InputError(f"{name} has {_what(i)} at index {at}, not a token id (an int); {_ENCODE}")
    return int(i)


def a_type(value: Any) -> str:
    """A value's type with its article: "a list", "an int"."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _what(value: Any) -> str:
    """A value as a message shows it: its type, and the value itself when short."""
    shown = quoted(repr(value), 40)
    return f"{a_type(value)} ({shown})" if len(shown) < 40 else a_type(value)
