"""What `tiankong generate` reads: prompts from --prompt flags or an input file (JSON lines or
plain text lines, read by trainers/records.py as `compare --prompts` and PPO read them), every line
checked before the model loads, and one warning for the keys of a line that generate does not read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional

from tiankong.engine.errors import InputError
from tiankong.tui.cli_app import err

if TYPE_CHECKING:
    from rich.text import Text


def say(line: str | Text) -> None:
    """One line on stderr, as it is (no markup, no highlighting; a rich Text keeps its style). On a
    terminal it is wrapped at spaces to the terminal's width: the terminal's own wrap cut a path in two
    at the edge ("...kept in ter" / "m.jsonl.part-*"). Elsewhere (a log, a pipe) it stays one line, for
    grep. The trainers' notes and verdicts say theirs here too."""
    err.print(line, highlight=False, markup=False, soft_wrap=not err.is_terminal)


def read_jobs(prompts: List[str], input: Optional[str]) -> list[tuple[int, str, dict[str, Any]]]:
    """(number, where, prompt record) for each --prompt flag or line of an input file (JSON lines or plain
    text lines): number is the flag's place or the line's number (a blank line is skipped but counted, so
    --format text's "--- prompt 4" is the file's line 4), where names the flag or line for errors.

    Every line is checked before anything runs: one bad line stops the run with its line number
    and nothing is written, so a fixed file can simply be run again.
    """
    if prompts and input:
        raise InputError("give prompts with --prompt or --input, not both")
    if prompts:
        from tiankong.engine.files import check_text

        flags = [
            (i, "--prompt" if len(prompts) == 1 else f"--prompt {i}", {"prompt": p}) for i, p in enumerate(prompts, 1)
        ]
        for _, where, job in flags:
            check_text(job["prompt"], where)  # bytes that are not UTF-8: said before the model loads
        return flags
    if input is None:
        raise InputError("nothing to generate from: pass --prompt TEXT or --input FILE (- for stdin)")
    from tiankong.engine.chat import validate_messages
    from tiankong.trainers.records import read_prompt_records

    jobs = []
    for number, where, job in read_prompt_records(input):
        if "messages" in job:
            try:
                job["messages"] = validate_messages(job["messages"])
            except InputError as e:
                raise InputError(f"{where}: {e}") from None
        jobs.append((number, where, job))
    _warn_unread_keys(jobs)
    return jobs


# The keys of an input line that generate reads ("id" is copied into the line's records).
_READ_KEYS = ("prompt", "messages", "id")
# Keys a line may hold in the hope of changing its sampling, and the flag that does (for every line).
_SAMPLING_KEYS = {
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "min_p": "--min-p",
    "repetition_penalty": "--repetition-penalty",
    "presence_penalty": "--presence-penalty",
    "frequency_penalty": "--frequency-penalty",
    "seed": "--seed",
    "max_new_tokens": "--max-new-tokens",
    "max_tokens": "--max-new-tokens",
    "stop": "--stop",
    "n": "--n",
    "preset": "--preset",
    "params": "--preset and the flags",
    "model": "--model",
}


def _warn_unread_keys(jobs: list[tuple[int, str, dict[str, Any]]]) -> None:
    """One warning on stderr for the keys of input lines that generate does not read (a typo of
    "messages", a per-line "temperature"), naming the first line that has one; nothing is refused."""
    first, lines = "", 0
    keys: dict[str, None] = {}  # in the order first met
    for _, where, job in jobs:
        extra = [k for k in job if k not in _READ_KEYS]
        if extra:
            first, lines = first or where, lines + 1
            keys.update(dict.fromkeys(extra))
    if not keys:
        return
    from tiankong.engine.errors import quoted

    def names(ks: list[str]) -> str:
        shown = ", ".join(f'"{quoted(k, 40)}"' for k in ks[:6])
        return shown + (f" and {len(ks) - 6} more" if len(ks) > 6 else "")

    others = f" (and {lines - 1} other line{'s' if lines > 2 else ''})" if lines > 1 else ""
    line = f"warning: {first}{others} has keys that generate does not read: {names(list(keys))}; "
    line += 'it reads "prompt" or "messages", and copies "id" into the records'
    sampling = [k for k in keys if k in _SAMPLING_KEYS]
    if sampling:
        flags = ", ".join(dict.fromkeys(_SAMPLING_KEYS[k] for k in sampling))
        verb = "is" if len(sampling) == 1 else "are"
        line += (
            f". A line cannot set its own sampling, so {names(sampling)} {verb} not used: give {flags} (for every line)"
        )
    say(line)
