"""`tiankong generate`: batch generation from prompts or a file of them, to stdout or to a file that
torchrun's processes share (tui/shards.py), with the stages that the command reads as.

Apart from cli.py because it is the one command with a pipeline of its own (rows, batches, part
files, a tally); the others are a few lines each.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, List, NamedTuple, Optional

import typer
from rich.markup import escape

from tiankong.engine.errors import ContextOverflow, InputError
from tiankong.engine.files import stdout_errors, write_target
from tiankong.presets import DEFAULT_PRESET, get_preset
from tiankong.tui.cli_app import (
    ApiKeyOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOrServerOpt,
    TemplateOpt,
    _load,
    _load_text,
    _local_only,
    _model_dir,
    app,
    epilog,
    err,
    known_dtype,
    output_file,
)
from tiankong.tui.cli_env import say_decode_notice
from tiankong.tui.generate_input import read_jobs
from tiankong.tui.generate_input import say as _say
from tiankong.tui.stops import Stops, Terminated


def _say_loading(model: Any, device: str, dtype: str, chat_template: Optional[Path], say: bool = True) -> Any:
    """A local --model resolved and announced on stderr before it loads (generate, serve): the note
    of _model_dir, then "loading NAME (SIZE)…". A log line, written whether or not stderr
    is a terminal: a model of some GB takes seconds to load, and nothing else is said meanwhile. A
    server (http://...) is passed on as it is; `say` False (torchrun's other processes) says nothing."""
    from tiankong.engine.engine import load_note
    from tiankong.engine.model_list import human_bytes, weight_bytes
    from tiankong.engine.model_names import display_name
    from tiankong.engine.remote import is_remote

    _local_only([model], device, dtype, chat_template)  # a flag the model refuses, before "loading"
    if is_remote(model):
        return model
    known_dtype(dtype)
    path = _model_dir(model)  # says the note, if any
    if say:
        _say(f"loading {display_name(path)} ({human_bytes(weight_bytes(path))})…")  # units as `info` and `models`
        if (note := load_note(path, device, dtype)) is not None:  # F16 widened, blocks quantized again
            _say(note)
    return path


def _record(
    job: dict, model: str, preset: str, params, ev_finished, tokens: list | None, dropped: int = 0
) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    if "id" in job:
        rec["id"] = job["id"]
    if "messages" in job:  # one or the other, as the input line had it (no "prompt": null beside)
        rec["messages"] = job["messages"]
    else:
        rec["prompt"] = job.get("prompt", "")
    rec.update(
        model=model,  # as a compare vote stores it: `tiankong rank` keeps it in each vote
        preset=preset,
        params=params.to_dict(),
        seed=params.seed,
        text=ev_finished.text,
        finish_reason=ev_finished.finish_reason,
        usage={
            "prompt_tokens": ev_finished.usage.prompt_tokens,
            "completion_tokens": ev_finished.usage.completion_tokens,
        },
        timing={
            "prefill_s": round(ev_finished.timing.prefill_s, 6),
            "decode_s": round(ev_finished.timing.decode_s, 6),
            "decode_tokens_per_s": round(ev_finished.timing.decode_tokens_per_s, 3),
        },
    )
    if ev_finished.finish_reason == "error":
        rec["error"] = ev_finished.message
    if dropped:
        rec["dropped_turns"] = dropped  # --context-overflow truncate: the oldest turns the model did not see
    if tokens is not None:
        rec["tokens"] = tokens
    return rec


_NOTES = """Input lines are JSON objects with "prompt" or "messages" (an "id" is copied through; other keys are not
read, and a warning names them), or plain text (a text prompt that starts with "{" is given as {"prompt": "..."}).
In a .jsonl file a line that is a JSON string is the prompt's text, and other JSON (42, [1,2], null) is refused;
in a text file or on stdin each line that does not start with "{" is text as it stands.
A bad line stops the run before the model loads, naming the line; a prompt longer than the context stops it
before anything is generated (every such line counted, the first few named). A model without a chat template joins a "messages" line's contents without
roles (said once; --raw does so on purpose).

--format text writes each answer followed by a blank line; with several prompts or --n, a line before each
answer says which ("--- prompt 2, sample 1 of 4, seed 7 ---", with the line's "id" if it has one; the
number is the input's line number, blank lines counted).

--context-overflow truncate instead drops the oldest turns of a "messages" conversation (never a system
message or the last turn) until it leaves room for the answer (max-new-tokens, at most a quarter of the
context), and records how many in "dropped_turns". An answer cut short by the context ends with
finish_reason "context" (the max-new-tokens limit is "length"); a --max-new-tokens above the context is
not refused, and a note on stderr says the most an answer gets.

--output is replaced only when the run ends: on an error it is left as it was (and it may not be the
--input file). Finished records are kept in OUTPUT.part-* as they come (one per process), so after a
Ctrl+C, a kill or a crash the same command again generates only the rest (records made with other settings
are not reused: the run says how many, and removes them when it finishes); one run at a time writes an
OUTPUT (a second is refused). Under torchrun (--nnodes, --nproc_per_node) each process takes its share
of the records and the first merges them into OUTPUT in input order: the same file for any number of
processes (with --seed; without one, each record's drawn seed is recorded). Progress goes to stderr: a bar on a terminal, else a line every 10 s or tenth."""


@app.command(
    epilog=epilog(
        'tiankong generate --raw --prompt "Once upon a time"',
        "tiankong generate -m HuggingFaceTB/SmolLM2-135M-Instruct --preset precise \\\n"
        '    --prompt "Name three primes." --top-logprobs 5',
        "tiankong generate --input prompts.jsonl --n 4 --batch-size 8 -o out.jsonl",
        "torchrun --nproc_per_node 4 -m tiankong.tui.cli generate \\\n    --input big.jsonl -o out.jsonl",
        notes=_NOTES,
    )
)
def generate(
    model: Optional[str] = ModelOrServerOpt,
    prompt: List[str] = typer.Option([], "--prompt", "-p", help="A prompt; repeat for several."),
    input: Optional[str] = typer.Option(
        None, "--input", "-i", help="File of prompts (JSONL or text lines; blank lines are skipped); - reads stdin."
    ),
    presets: List[str] = typer.Option(  # a list only to refuse a second --preset (typer kept the last)
        [DEFAULT_PRESET], "--preset", metavar="<str>", help="Sampling preset (see `tiankong presets`); one per run."
    ),
    temperature: Optional[float] = typer.Option(None, help="Overrides the preset; 0 is greedy."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Keep the k most likely tokens; 0 = off."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus mass to keep; 1 = off."),
    min_p: Optional[float] = typer.Option(
        None, "--min-p", help="Drop tokens below min-p x the top probability; 0 = off."
    ),
    repetition_penalty: Optional[float] = typer.Option(None, help="Divide logits of tokens already seen; 1 = off."),
    presence_penalty: Optional[float] = typer.Option(
        None, help="Subtract for each generated token already present; 0 = off."
    ),
    frequency_penalty: Optional[float] = typer.Option(
        None, help="Subtract per occurrence among generated tokens; 0 = off."
    ),
    seed: Optional[int] = typer.Option(
        None,
        help="Seed; sample i of each prompt uses seed + i. Default: the preset's, else one drawn for the run "
        "(each record has its seed).",
    ),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Stop after this many tokens."),
    stop: List[str] = typer.Option([], "--stop", help="Stop string; repeat for several."),
    n: int = typer.Option(
        1,
        "--n",
        "-n",
        min=1,
        help="Independent samples per prompt (-n under torchrun, whose own flags take --n); prompts x n at most 1,000,000 "
        "a run (a bigger input: split it, and give each part the same --seed).",
    ),
    top_logprobs: int = typer.Option(
        0, "--top-logprobs", min=0, help="Record every token with its top K candidates (--format jsonl)."
    ),
    raw: bool = typer.Option(False, "--raw", help="Plain completion: skip the chat template."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Rows generated together in one forward pass."),
    context_overflow: str = typer.Option(
        "error",
        "--context-overflow",
        help="A conversation longer than the context: error (stop before generating, naming the line) or truncate (drop its oldest turns, recorded as dropped_turns).",
    ),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here instead of stdout (- is stdout)."),
    format: str = typer.Option("jsonl", "--format", help="jsonl (one record per sample) or text."),
    chat_template: Optional[Path] = TemplateOpt,
    api_key: Optional[str] = ApiKeyOpt,
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
) -> None:
    """Generate from prompts with a preset; JSONL records with text, usage, timing and (optionally) every token's candidates.\f

    Long because of its signature: some 40 lines of typer option declarations; the body reads as its
    stages (options checked, prompts read, model loaded, rows encoded, to stdout or to a file).
    """
    if format not in ("jsonl", "text"):
        raise InputError(f"unknown --format {format!r}; use jsonl or text")
    if context_overflow not in ("error", "truncate"):
        raise InputError(f"unknown --context-overflow {context_overflow!r}; use error or truncate")
    if top_logprobs and format == "text":
        raise InputError("--top-logprobs needs --format jsonl (plain text has no place for the candidates); drop one")
    output = output_file(output)  # "-" is stdout
    if output is not None:
        write_target(output, probe=True)  # a missing or unwritable folder, a device: said before the model loads
        _not_the_input(output, input)
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("under torchrun, generate needs --output FILE (the processes' records are merged there)")
    jobs = read_jobs(prompt, input)
    _check_rows(len(jobs), n, input)  # before the seed check: an n past 2**64 is said as too many rows
    flags = dict(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        seed=seed,
        max_new_tokens=max_new_tokens,
        stop=tuple(stop) if stop else None,
    )
    preset, params = _one_preset(presets)
    params = params.replace(**{k: v for k, v in flags.items() if v is not None})
    if params.seed is not None and params.seed + n - 1 > 2**64 - 1:  # sample i uses seed + i: none wraps to 0
        raise InputError(f"--seed must be at most {2**64 - n} with --n {n} (sample i uses seed + i, up to 2**64 - 1)")
    # Stops from here, not only once generating: a Ctrl+C or SIGTERM while torch imports or the model
    # loads (seconds to minutes) is said too, where it ended the run without a word.
    with Stops() as stops, _Startup() as startup:
        dist = _join(device)  # imports torch
        device = str(dist.device) if dist.enabled else device
        with _claim(output, dist):  # one run at a time writes OUTPUT: a second is refused before its model loads
            base = _base_seed(params, dist)
            eng, rows = _load_encoded(
                _Loading(model, device, dtype, chat_template, api_key, dist.is_main, raw),
                lambda text: _encode_rows(text, jobs, params, n, raw, context_overflow, base),
            )
            _say_no_template(eng, jobs, raw, dist.is_main)
            if dist.is_main and max_new_tokens:  # asked for: a preset's own (creative's 1024) goes unsaid
                _say_past_context(eng, params, rows, "--max-new-tokens")
            from tiankong.tui.screens.compare_rounds import model_identity  # the engine's (torch) imports: here

            show = input is not None and dist.is_main
            run = _Run(eng, preset, format, top_logprobs, batch_size, show_progress=show, stops=stops, n=n)
            run.model, run.headed = model_identity(eng), len(rows) > 1
            startup.over = True  # from here each stage says what a stop kept
            if output is None:
                tally = _generate_to_stdout(run, rows)
            else:
                settings = dict(model=str(model), preset=preset, raw=raw, format=format, top_logprobs=top_logprobs)
                settings.update(context_overflow=context_overflow, seeded=params.seed is not None)
                # The weights' type and the chat template decide the text too: a run resumed with another
                # --dtype or --chat-template does its rows again rather than mixing both in one file.
                template = getattr(eng.template, "source", None)
                digest = hashlib.sha256(template.encode()).hexdigest() if template else None
                tally = _generate_to_file(run, rows, output, dist, {**settings, "dtype": dtype, "template": digest})
    if tally.rows and tally.failed == tally.rows:  # every row failed: the model is broken, not one prompt
        raise typer.Exit(2)


class _Row(NamedTuple):
    index: int  # in input order: prompt p's sample i is row p * n + i
    sample: int
    number: int  # the prompt's --prompt flag or input line (read_jobs), as --format text's head names it
    job: dict
    ids: list
    params: Any  # SamplingParams with the row's seed
    dropped: int  # conversation turns --context-overflow truncate dropped


@dataclass
class _Run:
    """What every batch of one generate run shares."""

    eng: Any
    preset: str
    format: str
    top_logprobs: int
    batch_size: int
    show_progress: bool
    stops: Stops = field(default_factory=lambda: Stops())
    n: int = 1  # samples per prompt (--n): row i is prompt i // n's sample i % n
    model: str = ""  # as a compare vote stores it (compare_rounds.model_identity), in every record
    headed: bool = False  # --format text with several rows: a line before each answer says which (_text_head)

    def bar(self, total: int, label: str = "generating", enabled: bool = True, done: int = 0):
        """The progress bar: it counts rows written out (saved, or on stdout), not rows generated in
        a batch not yet written, so that a Ctrl+C keeps what it showed."""
        from tiankong.trainers.progress import progress

        return progress(label, total, done=done, enabled=self.show_progress and enabled, console=err)


class _Startup:
    """A stop (Ctrl+C, SIGTERM) before generating begins, while torch imports or the model loads or
    the prompts are encoded: one line that nothing was written, and its exit code (130, 143), where
    SIGTERM ended the run without a word. Once `over`, the generating stages say what was kept."""

    def __init__(self) -> None:
        self.over = False

    def __enter__(self) -> _Startup:
        return self

    def __exit__(self, kind: Any, stop: Any, tb: Any) -> None:
        if self.over or not isinstance(stop, KeyboardInterrupt):
            return
        if os.environ.get("RANK", "0") == "0":  # under torchrun, said once
            _say(f"{_stopped(stop)} before generating: nothing was written")
        raise typer.Exit(_stop_code(stop)) from None


@dataclass
class _Tally:
    """Rows this run generated and failed (over every process once the run ends); to stdout, also
    the outputs written whole and whether one was being written when the run stopped."""

    rows: int = 0
    failed: int = 0
    written: int = 0
    partial: bool = False


def _one_preset(given: List[str]) -> tuple[str, Any]:
    """The run's preset name and sampling parameters. One preset per run: typer would keep the last
    of several --preset flags without a word, and a list of names is no preset's name."""
    from tiankong.engine.errors import quoted

    again = "one preset per run: run generate once per preset"
    if len(given) > 1:
        names = ", ".join(quoted(g, 40) for g in given)
        raise InputError(f"--preset is given {len(given)} times ({names}); {again}")
    try:
        return given[0], get_preset(given[0]).params
    except InputError as e:
        if "," in given[0]:
            raise InputError(f"{e}; {again}") from None
        raise


def _not_the_input(output: Path, input: Optional[str]) -> None:
    """Refuse an --output that is the --input file (through links, or on stdin as `- < FILE`):
    the answers would replace the prompts."""
    if input is None:
        return
    try:
        out = os.stat(output)
        same = os.path.samestat(os.fstat(sys.stdin.fileno()), out) if input == "-" else os.path.samefile(input, output)
    except (OSError, ValueError):  # no such output (yet), no such input, no stdin: not the same file
        return
    if same:
        what = "the file on standard input (--input -)" if input == "-" else "the --input file"
        raise InputError(f"--output {output} is {what}: the answers would replace the prompts; write elsewhere")


@contextlib.contextmanager
def _claim(output: Optional[Path], dist: Any) -> Iterator[None]:
    """OUTPUT held for this run (tui/shards.OutputLock, by the first process) until it ends; a run
    already writing it refuses this one, every process of it."""
    from tiankong.tui.shards import OutputLock

    if output is None:
        yield
        return
    lock, refused = OutputLock(output), None
    if dist.is_main:
        try:
            lock.__enter__()
        except InputError as e:
            refused = e
    if dist.enabled and dist.all_reduce_sum({"refused": float(refused is not None)})["refused"] and not refused:
        raise InputError(f"--output {output} is being written by another run (said by process 1)")
    if refused is not None:
        raise refused
    try:
        yield
    finally:
        lock.__exit__()


def _join(device: str) -> Any:
    """This process's place under torchrun (a single process without it). Each process uses its own
    GPU; barriers wait up to a day for the slowest process's last batch."""
    from datetime import timedelta

    from tiankong.trainers.distributed import init_distributed

    return init_distributed(device, timeout=timedelta(days=1))


MAX_ROWS = 1_000_000  # (prompt, sample) rows of one run: each is held, encoded, before the first is generated


def _check_rows(prompts: int, n: int, input: Optional[str] = None) -> None:
    """Refuse a run of more rows than MAX_ROWS, before the model loads. _encode_rows builds every row
    up front (about 400 bytes each, plus the prompt's ids): --n 10**20 grew memory without end and
    said nothing. The bound also keeps a drawn base seed (below 2**31) + n - 1 under 2**64.

    Rows are not streamed: the run checks every prompt against the context before the first answer,
    resumes by an index of every row (tui/shards.py) and reads stdin once, so a bigger input is split
    into runs. The message says how: the prompts a run takes at this --n, a `split` command that
    keeps the file's suffix (a .jsonl part read as text would keep a JSON string line's quotes), and
    --seed, so that each row's seed is the one a single run would give it (sample i: seed + i)."""
    if prompts * n <= MAX_ROWS:
        return
    what = f"--n {n} with {prompts} prompt{'s' if prompts != 1 else ''}" if n > 1 else f"{prompts} prompts"
    said = f"{what} makes {prompts * n} rows, more than one generate run takes ({MAX_ROWS:,}"
    said += ", each prepared before the first is generated)"
    per_run = MAX_ROWS // n
    if per_run == 0:
        fix = f"lower --n to {MAX_ROWS:,} or fewer"
    elif input is None:
        fix = f"give at most {per_run:,} --prompt flags a run, or lower --n"
    else:
        import shlex

        suffix = Path(input).suffix if input != "-" else ""
        keep = f" --additional-suffix={shlex.quote(suffix)}" if suffix else ""
        fix = (
            f"split the input into parts of at most {per_run:,} lines (split -l {per_run}{keep} "
            f"{shlex.quote(input)} part-) and run each part with its own --output and the same --seed (so each "
            "row keeps its seed), then join the outputs in order" + (", or lower --n" if n > 1 else "")
        )
    raise InputError(f"{said}; {fix}")


def _base_seed(params: Any, dist: Any) -> int:
    """Sample i of every prompt uses this + i: --seed (or the preset's seed), else one seed drawn for
    the run, as serve draws one per request (each sample drew its own, so the samples of a prompt had
    unrelated seeds where README says seed, seed+1, ...; --seed with the drawn one repeats the run).
    Under torchrun the first process draws it and the others take it (a prompt's samples may be
    generated by several processes)."""
    from tiankong.engine.params import draw_seed

    if params.seed is not None:
        return int(params.seed)
    drawn = draw_seed() if dist.is_main else 0  # below 2**31: exact in all_reduce_sum's float64
    return int(dist.all_reduce_sum({"seed": float(drawn)})["seed"])


class _Loading(NamedTuple):
    """What loads the model: generate's options."""

    model: Optional[str]
    device: str
    dtype: str
    chat_template: Optional[Path]
    api_key: Optional[str]
    say: bool  # the first process (torchrun's rank 0), which says what loads
    raw: bool  # --raw: the chat template goes unused


def _load_encoded(how: _Loading, encode: Callable[[Any], list[_Row]]) -> tuple[Any, list[_Row]]:
    """The model loaded and the rows encoded (`encode`, given what encodes): for a local model the
    rows first, with its tokenizer and chat template loaded without the weights (_load_text), so that
    every input line too long for the context (or refused otherwise) is said at once, not after the
    weights of a model of some GB have loaded; then the weights, with that tokenizer. A server
    (--model http://...) encodes with its own tokenizer: once connected."""
    text = _load_text(how.model, how.device, how.dtype, how.chat_template, how.raw)
    rows = encode(text) if text is not None else None
    target = _say_loading(text.folder if text else how.model, how.device, how.dtype, how.chat_template, how.say)
    tokenizer = text.tokenizer if text else None
    eng = _load(target, how.device, how.dtype, how.chat_template, how.api_key, tokenizer=tokenizer)
    say_decode_notice(eng)  # no compiled step: several times slower, said once (rank 0)
    return eng, rows if rows is not None else encode(eng)


SHOWN_REFUSALS = 3  # input lines a refused run names with their errors; the rest are counted


def _encode_rows(eng: Any, jobs: list, params: Any, n: int, raw: bool, overflow: str, base: int) -> list[_Row]:
    """Every (prompt, sample) row with the row's seed (`base` + the sample's index), every prompt
    encoded and checked against the context before any output (`eng`: the Engine, or the local
    model's Prompter before its weights load). The seed depends only on the sample
    index, never on batching or on which process generates the row. Lines that do not encode or fit
    are all found before the run stops: it named the first, and the next run the second."""
    rows, refused = [], []
    for number, where, job in jobs:
        dropped = 0
        try:
            if overflow == "truncate" and job.get("messages") is not None:
                ids, dropped = eng.fit(job["messages"], params.max_new_tokens, raw=raw)
            else:
                # the answer's length: a refusal of a line too long in characters names the room, as check_fits
                ids = eng.encode(
                    prompt=job.get("prompt"),
                    messages=job.get("messages"),
                    raw=raw,
                    max_new_tokens=params.max_new_tokens,
                )
                eng.check_fits(ids, params.max_new_tokens)
        except InputError as e:
            helps = overflow != "truncate" and _truncation_helps(eng, job, e, params, raw)
            hint = " (or pass --context-overflow truncate to drop its oldest turns)" if helps else ""
            refused.append(f"{where}: {e}{hint}")
            continue
        for i in range(n):
            # In range: generate() checked --seed + n - 1; a drawn base is below 2**31
            rows.append(_Row(len(rows), i, number, job, ids, params.replace(seed=base + i), dropped))
    if len(refused) == 1:
        raise InputError(refused[0])
    if refused:
        more = len(refused) - SHOWN_REFUSALS
        rest = f"; and {more} more" if more > 0 else ""
        raise InputError(f"{len(refused)} prompts were refused: " + "; ".join(refused[:SHOWN_REFUSALS]) + rest)
    return rows


def _say_past_context(eng: Any, params: Any, rows: list[_Row], given: str) -> None:
    """One note where max new tokens is more than the model's context holds: no answer can be that
    long, each stops where its prompt and it fill the context (finish_reason "context", said nowhere
    in --format text). Not refused, as chat's f3 refuses it: a script may pass a large value on
    purpose. given: whose value it is (the flag, or the preset's field)."""
    ctx, most = eng.cfg.max_seq_len, params.max_new_tokens
    if most <= ctx or not rows or not getattr(eng.cfg, "context_known", True):
        return
    sizes = sorted({len(r.ids) for r in rows})
    if len(sizes) == 1:
        cap = f"at most {ctx - sizes[0]} new tokens after the {sizes[0]}-token prompt"
    else:
        cap = f"at most {ctx} less its prompt's tokens, {ctx - sizes[-1]} to {ctx - sizes[0]} new tokens here"
    _say(
        f"note: {given} {most} is more than the model's {ctx}-token context holds: an answer stops where "
        f'its prompt and it fill the context, {cap} (finish_reason "context")'
    )


def _truncation_helps(eng: Any, job: dict, error: InputError, params: Any, raw: bool) -> bool:
    """Whether a conversation too long for the context would fit with its oldest turns dropped: a
    way out the error cannot know, offered only where it works (not where the system message or the
    last message alone is too long)."""
    if not isinstance(error, ContextOverflow) or job.get("messages") is None:
        return False
    try:
        eng.fit(job["messages"], params.max_new_tokens, raw=raw)
    except InputError:
        return False
    return True


def _generate_to_stdout(run: _Run, rows: list[_Row]) -> _Tally:
    """Batches in order, each printed when done; one text prompt streams its tokens as they come."""
    tally = _Tally()
    stream = _Stream(tally, run.stops) if run.format == "text" and len(rows) == 1 else None
    try:
        with stdout_errors(), run.bar(len(rows), enabled=stream is None) as bar:
            for start in range(0, len(rows), run.batch_size):
                batch = rows[start : start + run.batch_size]
                outs = _generate_batch(run, batch, bar, tally, stream)
                with run.stops.held():
                    tally.partial = True  # until the write returns (a second Ctrl+C may cut it)
                    bar.write("".join(outs))
                    tally.written, tally.partial = tally.written + len(outs), False
                bar(steps=len(outs))
    except KeyboardInterrupt as stop:
        _report_stdout_interrupt(stop, run.format, tally, len(rows))
        raise typer.Exit(_stop_code(stop)) from None
    return tally


class _Stream:
    """Standard output for one streamed answer, noting that part of it is out."""

    def __init__(self, tally: _Tally, stops: Stops) -> None:
        self.tally, self.stops = tally, stops

    def write(self, text: str) -> None:
        self.tally.partial = self.tally.partial or bool(text)
        with self.stops.held():
            sys.stdout.write(text)

    def flush(self) -> None:
        with self.stops.held():
            sys.stdout.flush()


def _generate_to_file(run: _Run, rows: list[_Row], output: Path, dist: Any, settings: dict) -> _Tally:
    """This process's share of the rows not finished before into its part file, then (first process,
    after every process is done) the parts merged into OUTPUT in row order; see tui/shards.py."""
    from tiankong.tui import shards

    keys = [shards.row_key(r.job, r.sample, _key_params(r, settings["seeded"]), settings) for r in rows]
    finished = shards.read_index(output)
    dist.barrier()  # every process has read the parts before any appends: all agree on the rows to do
    todo = [r for r, k in zip(rows, keys, strict=True) if (r.index, k) not in finished]
    mine = shards.my_batches(todo, run.batch_size, dist.rank, dist.world)
    tally, part = _Tally(), shards.PartWriter(output, dist.rank)
    if dist.is_main:
        _say_resumed(run, rows, keys, finished, output, settings["seeded"])
    bar = _file_bar(run, rows, todo, mine, dist)
    try:
        with part, bar:
            for batch in mine:
                outs = _generate_batch(run, batch, bar, tally)
                with run.stops.held():  # a batch's lines are kept whole, and counted
                    part.append((r.index, keys[r.index], o) for r, o in zip(batch, outs, strict=True))
                bar(steps=len(batch))
    except KeyboardInterrupt as stop:
        _report_interrupt(stop, output, len(rows) - len(todo) + part.written)
        raise typer.Exit(_stop_code(stop)) from None
    sums = dist.all_reduce_sum({"rows": tally.rows, "failed": tally.failed})  # also the barrier before the merge
    if dist.is_main:
        _merge(output, [(r.index, k) for r, k in zip(rows, keys, strict=True)], run.format)
    dist.close()
    return _Tally(int(sums["rows"]), int(sums["failed"]))


def _file_bar(run: _Run, rows: list[_Row], todo: list[_Row], mine: list[list[_Row]], dist: Any) -> Any:
    """The bar of a run to a file: over every row, from those done before; under torchrun over the
    first process's share, with a short label (the numbers of a long one were cut at 80 columns) and
    a line before it that says what it counts."""
    if dist.world == 1:
        return run.bar(len(rows), done=len(rows) - len(todo))
    share = sum(map(len, mine))
    if run.show_progress:
        _say(f"{dist.world} processes share the {len(todo)} rows to do; the bar counts process 1's {share}")
    return run.bar(share, f"process 1/{dist.world}")


def _say_resumed(run: _Run, rows: list[_Row], keys: list[str], finished: Any, output: Path, seeded: bool) -> None:
    """Say what the part files of earlier runs give this one: the rows done before, and the records
    made with other settings (or from other input lines), which this run does not reuse. Those stay
    until this run finishes, so that the earlier command run again still finds them; its merge then
    removes every part file, so they never outlive one whole run of the new command."""
    wanted = set(zip(range(len(rows)), keys, strict=True))
    stale = [(row, at) for (row, key), at in finished.items() if (row, key) not in wanted]
    if stale:
        from tiankong.tui import shards

        row, (path, offset) = stale[0]
        entry = shards.entry_at(path, offset)
        differ = _what_differs(entry["out"] if entry else None, rows[row] if row < len(rows) else None, run, seeded)
        s = "s" if len(stale) != 1 else ""
        made = f" (the first: another {differ})" if differ else ""
        _say(
            f"{output}.part-* holds {len(stale)} record{s} made with other settings or from other input "
            f"lines{made}; this run does not reuse them, and removes them when it finishes"
        )
    done = len(finished) - len(stale)
    if done:
        _say(
            f"resuming: {done} of {len(rows)} records are already in {output}.part-*; generating the other {len(rows) - done}"
        )


def _what_differs(out: Optional[str], row: Optional[_Row], run: _Run, seeded: bool) -> str:
    """What made an earlier record other than the record this run would make of the same row, as
    far as the record tells ("--preset and --temperature", "its input line"); "" where it cannot tell
    (settings that no record holds: --raw, --dtype, --chat-template, --context-overflow)."""
    try:
        old = json.loads(out) if out is not None else None
    except ValueError:
        old = None
    record = isinstance(old, dict) and "params" in old  # else an answer of --format text
    if out is not None and record != (run.format == "jsonl"):
        return "--format"
    if not record or not isinstance(old, dict) or row is None:
        return ""
    names = [
        flag
        for flag, field, now in (("--model", "model", run.model), ("--preset", "preset", run.preset))
        if old.get(field) != now
    ]
    before = old["params"] if isinstance(old["params"], dict) else {}  # "params" is in every record
    for k, v in row.params.to_dict().items():
        if before.get(k, v) != v and (seeded or k != "seed"):  # a drawn seed is no setting
            names.append("--" + k.replace("_", "-"))
    if ("tokens" in old) != bool(run.top_logprobs):
        names.append("--top-logprobs")
    job = row.job
    if [old.get("id"), old.get("prompt"), old.get("messages")] != [
        job.get("id"),
        None if "messages" in job else job.get("prompt"),
        job.get("messages"),
    ]:
        names.append("its input line")
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def _merge(output: Path, rows: list[tuple[int, str]], format: str) -> None:
    """OUTPUT written from the part files, and said; a write that fails (a full disk) says that every
    record is kept, and that the same command again only writes OUTPUT."""
    from tiankong.engine.files import WriteError
    from tiankong.tui import shards

    noun = "record" if format == "jsonl" else "answer"
    try:
        shards.merge(output, rows)
    except WriteError as e:
        cause = e.reason.split(";")[0]  # its fix ("or write elsewhere") would generate everything again
        fix = "free some space" if "full" in cause or "quota" in cause else "fix that"
        raise WriteError(
            output,
            f"{cause}; all {len(rows)} {noun}s are kept in {output}.part-*: {fix} and run the same command "
            f"again to write {output} (nothing is generated again)",
        ) from None
    _say(f"wrote {len(rows)} {noun}{'s' if len(rows) != 1 else ''} to {output}")


def _key_params(row: _Row, seeded: bool) -> dict:
    """The row's sampling parameters as they decide its output. A drawn seed is no setting (each run
    draws others), so a run without a seed that is resumed still finds the rows finished before."""
    return row.params.to_dict() if seeded else {**row.params.to_dict(), "seed": None}


def _generate_batch(run: _Run, batch: list[_Row], bar: Any, tally: _Tally, stream: Any = None) -> list[str]:
    """Generate one batch of rows; the output of each row (its JSONL record, or its text), in order.
    A failed row is reported and the others go on. stream: where tokens are written as they come.
    bar: the progress bar, which notes the rows of the batch done (it counts them once written)."""
    from tiankong.engine.generate import HeldText

    tokens: list[list] = [[] for _ in batch]
    done: dict[int, Any] = {}
    held = [HeldText(r.params.stop) for r in batch]  # no part of a stop string is streamed
    for ev in run.eng.generate([r.ids for r in batch], [r.params for r in batch], top_logprobs=run.top_logprobs):
        if hasattr(ev, "finish_reason"):
            done[ev.row] = ev
            bar.note(f"{len(done)} of the next {len(batch)} done")
            if stream is not None:
                stream.write(held[ev.row].finish(ev.text))
            continue
        if run.top_logprobs:
            tokens[ev.row].append(ev.to_dict())
        if stream is not None:
            stream.write(held[ev.row].push(ev.text))
            stream.flush()
    outs = []
    for b, r in enumerate(batch):
        fin = done[b]
        if fin.finish_reason == "error":  # this row failed (non-finite logits)
            tally.failed += 1
            where = f"id {r.job['id']}" if "id" in r.job else f"row {r.index + 1}"
            err.print(
                f"[bold red]error:[/bold red] {escape(where)}: {escape(fin.message)}", highlight=False, soft_wrap=True
            )
        if run.format == "jsonl":
            chosen = tokens[b] if run.top_logprobs else None
            rec = _record(r.job, run.model, run.preset, r.params, fin, chosen, r.dropped)
            outs.append(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            head = _text_head(r, run.n) if run.headed else ""
            outs.append("\n" if stream is not None else head + fin.text + "\n\n")
    tally.rows += len(batch)
    return outs


def _text_head(row: _Row, n: int) -> str:
    """--format text's line before an answer of a run with several: which prompt (and its "id", as
    JSON: no id can break the line), which sample of --n, which seed; the answers alone did not say."""
    where = f"prompt {row.number}"
    if "id" in row.job:
        where += f" (id {json.dumps(row.job['id'], ensure_ascii=False)})"
    sample = f", sample {row.sample + 1} of {n}" if n > 1 else ""
    return f"--- {where}{sample}, seed {row.params.seed} ---\n"


def _say_no_template(eng: Any, jobs: list, raw: bool, say: bool) -> None:
    """A "messages" input given to a local model without a chat template is joined without roles
    (engine/chat.py's raw mode): said once, as `serve` says it. --raw asks for that; a server
    (--model http://...) applies its own template."""
    from tiankong.engine.chat import no_template_note
    from tiankong.engine.remote import RemoteEngine

    if not say or raw or eng.template is not None or isinstance(eng, RemoteEngine):
        return
    if any("messages" in job for *_, job in jobs):
        note = no_template_note("generate", eng.folder)
        _say(f"warning: {note}; give --chat-template FILE, or --raw to join them on purpose")


def _stop_code(stop: KeyboardInterrupt) -> int:
    return 128 + signal.SIGTERM if isinstance(stop, Terminated) else 130


def _stopped(stop: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"


def _report_interrupt(stop: KeyboardInterrupt, output: Path, kept: int) -> None:
    s = "s" if kept != 1 else ""
    where = f"the {kept} finished record{s} are kept in {output}.part-*" if kept else "nothing had finished"
    state = "is unchanged" if os.path.lexists(output) else "was not created"
    _say(f"{_stopped(stop)}: {output} {state}; {where}; the same command again generates the rest")


def _report_stdout_interrupt(stop: KeyboardInterrupt, format: str, tally: _Tally, total: int) -> None:
    """How much of the output is on stdout: the outputs written whole, and one cut short."""
    noun = "record" if format == "jsonl" else "answer"
    whole = f"{tally.written} of {total} {noun}{'s' if total != 1 else ''}"
    if tally.written:
        whole += " (each complete)"
    cut = f"; the {'next' if tally.written else 'first'} one is cut short" if tally.partial else ""
    rest = "" if tally.written + tally.partial >= total else "; the others were not generated"
    _say(f"{_stopped(stop)}: standard output got {whole}{cut}{rest} (with --output FILE a stopped run resumes)")
