"""The `tiankong` command line: a thin typer layer over the engine's public API.

Each command parses its flags, builds the engine objects and calls one function. Every user
mistake surfaces as a TiankongError, printed here as one line with exit code 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, NamedTuple, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tiankong.engine.errors import InputError, TiankongError
from tiankong.engine.files import stdout_errors, write_target
from tiankong.presets import DEFAULT_PRESET, get_preset, load_presets
from tiankong.tui import controls

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="tiankong (填空): watch a language model fill in the blank, one token at a time.",
)
err = Console(stderr=True, emoji=False)  # emoji=False: "ollama:cat:cool" in a message must not become a cat

MODEL_HELP = (
    "Hugging Face model folder (config.json, safetensors, tokenizer), a .gguf file, or a name: "
    "ORG/NAME[@REVISION] (or ORG/NAME/FILE.gguf) from the Hugging Face cache or LM Studio, ollama:NAME[:TAG] "
    "from Ollama (`tiankong models` lists them). Env: TIANKONG_MODEL. Default: the bundled tiankong-mini."
)
ModelOpt = typer.Option(None, "--model", "-m", help=MODEL_HELP, envvar="TIANKONG_MODEL", show_default=False)
DeviceOpt = typer.Option("auto", help="cpu, cuda, mps or auto (cuda, then mps, then cpu).")
DtypeOpt = typer.Option(
    "auto",
    help="float32, bfloat16, float16, auto (float32 on CPU, bfloat16 on GPU), or q8_0, q4_0, q4_1, q5_0, q5_1 (quantize at load).",
)
ApiKeyOpt = typer.Option(
    None,
    "--api-key",
    help="Key for a --model http://HOST:PORT/v1 server (sent as Authorization: Bearer). Env: TIANKONG_API_KEY.",
    envvar="TIANKONG_API_KEY",
    show_default=False,
)
ModelOrServerOpt = typer.Option(
    None,
    "--model",
    "-m",
    help=MODEL_HELP + " Or a server: http://HOST:PORT/v1 (tiankong serve, vLLM, llama.cpp's server).",
    envvar="TIANKONG_MODEL",
    show_default=False,
)
TemplateOpt = typer.Option(
    None,
    "--chat-template",
    help='A chat template file (Jinja, or JSON with "chat_template") used instead of the model\'s own.',
    show_default=False,
)


def _model_dir(model: Optional[Path | str]) -> Path:
    """--model, else $TIANKONG_MODEL (typer reads it), else the bundled tiankong-mini; names are
    looked up offline (engine/resolve.py), a local path winning over a name."""
    from tiankong.engine.resolve import resolve_model

    return resolve_model(model)


def _playground_model(model: Optional[Path | str], api_key: Optional[str]) -> Any:
    """chat's and compare's --model: a server (http://HOST:PORT/v1, engine/remote.py) with its key,
    else a model folder as _model_dir finds it."""
    from tiankong.engine.remote import RemoteModel, is_remote

    return RemoteModel(str(model), api_key) if is_remote(model) else _model_dir(model)


def _local_only(models: list[Any], device: str, dtype: str, chat_template: Optional[Path]) -> Optional[Path]:
    """--device, --dtype and --chat-template shape a model this process loads; a server runs its own.
    Refused rather than silently ignored when a --model is a URL. Returns the checked template file."""
    from tiankong.engine.remote import is_remote

    given = [
        f
        for f, v in (("--device", device != "auto"), ("--dtype", dtype != "auto"), ("--chat-template", chat_template))
        if v
    ]
    if given and any(is_remote(m) for m in models if m is not None):
        verb = "applies" if len(given) == 1 else "apply"
        raise InputError(f"{', '.join(given)} {verb} to local models; a server (http://...) uses its own: drop it")
    return _template_file(chat_template)


def _template_file(chat_template: Optional[Path]) -> Optional[Path]:
    """--chat-template checked before a model loads or a screen opens."""
    if chat_template is not None and not os.path.isfile(chat_template.expanduser()):  # isfile never raises
        missing = not os.path.lexists(chat_template.expanduser())
        raise InputError(
            f"chat template {chat_template} {'does not exist' if missing else 'is not a readable regular file'}; "
            "give a Jinja template file"
        )
    return chat_template


def _load(
    model: Optional[Path | str],
    device: str = "auto",
    dtype: str = "auto",
    chat_template: Optional[Path] = None,
    api_key: Optional[str] = None,
):
    from tiankong.engine.engine import Engine
    from tiankong.engine.remote import RemoteEngine, is_remote

    _local_only([model], device, dtype, chat_template)
    if is_remote(model):  # a server: its own device, dtype and chat template
        return RemoteEngine.connect(str(model), api_key)

    return Engine.load(_model_dir(model), device=device, dtype=dtype, chat_template=_template_file(chat_template))


# ---------------------------------------------------------------- generate


def _read_jobs(prompts: List[str], input: Optional[str]) -> list[tuple[str, dict[str, Any]]]:
    """(where, prompt record) pairs from --prompt flags or an input file (JSON lines or plain text lines);
    where names the flag or line for errors.

    Every line is checked before anything runs: one bad line stops the run with its line number
    and nothing is written, so a fixed file can simply be run again.
    """
    if prompts and input:
        raise InputError("give prompts with --prompt or --input, not both")
    if prompts:
        return [("--prompt" if len(prompts) == 1 else f"--prompt {i}", {"prompt": p}) for i, p in enumerate(prompts, 1)]
    if input is None:
        raise InputError("nothing to generate from: pass --prompt TEXT or --input FILE (- for stdin)")
    from tiankong.engine.chat import validate_messages
    from tiankong.trainers.records import read_prompt_records

    jobs = []
    for _, where, job in read_prompt_records(input):
        if "messages" in job:
            try:
                job["messages"] = validate_messages(job["messages"])
            except InputError as e:
                raise InputError(f"{where}: {e}") from None
        jobs.append((where, job))
    return jobs


def _record(job: dict, preset: str, params, ev_finished, tokens: list | None, dropped: int = 0) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    if "id" in job:
        rec["id"] = job["id"]
    rec["prompt"] = job.get("prompt", "") if "messages" not in job else None
    if "messages" in job:
        rec["messages"] = job["messages"]
    rec.update(
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


@app.command(
    epilog="""[bold]Examples[/bold]

  tiankong generate -m ../shared/models/stories260K --raw --prompt "Once upon a time"

  tiankong generate -m ./TinyLlama --preset precise --prompt "Name three primes." --top-logprobs 5

  tiankong generate -m ./SmolLM2 --input prompts.jsonl --n 4 --batch-size 8 --output out.jsonl

  torchrun --nproc_per_node 4 -m tiankong.tui.cli generate -m ./SmolLM2 --input big.jsonl -o out.jsonl

Input lines are JSON objects with "prompt" or "messages" (an "id" is copied through), or plain text.
A bad line (or a prompt longer than the context) stops the run before anything is generated, naming the line.
--context-overflow truncate instead drops the oldest turns of a "messages" conversation (never a system
message or the last turn) until it leaves room for the answer (max-new-tokens, at most a quarter of the
context), and records how many in "dropped_turns". An answer cut short by the context ends with
finish_reason "context" (the max-new-tokens limit is "length").
--output is replaced only when the run ends: on an error it is left as it was. Finished records are kept
in OUTPUT.part-* as they come (one per process), so after a Ctrl+C, a kill or a crash the same command
again generates only the rest. Under torchrun (--nnodes, --nproc_per_node) each process takes its share
of the records and the first merges them into OUTPUT in input order: the same file for any number of
processes (with --seed; without one, each record's drawn seed is recorded)."""
)
def generate(
    model: Optional[str] = ModelOrServerOpt,
    prompt: List[str] = typer.Option([], "--prompt", "-p", help="A prompt; repeat for several."),
    input: Optional[str] = typer.Option(
        None, "--input", "-i", help="File of prompts (JSONL or text lines); - reads stdin."
    ),
    preset: str = typer.Option(DEFAULT_PRESET, help="Sampling preset (see `tiankong presets`)."),
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
        None, help="Seed; sample i of each prompt uses seed + i. Default: the preset's, else random (recorded)."
    ),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Stop after this many tokens."),
    stop: List[str] = typer.Option([], "--stop", help="Stop string; repeat for several."),
    n: int = typer.Option(
        1, "--n", "-n", min=1, help="Independent samples per prompt (-n under torchrun, whose own flags take --n)."
    ),
    top_logprobs: int = typer.Option(0, "--top-logprobs", min=0, help="Record every token with its top K candidates."),
    raw: bool = typer.Option(False, "--raw", help="Plain completion: skip the chat template."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Rows generated together in one forward pass."),
    context_overflow: str = typer.Option(
        "error",
        "--context-overflow",
        help="A conversation longer than the context: error (stop before generating, naming the line) or truncate (drop its oldest turns, recorded as dropped_turns).",
    ),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
    format: str = typer.Option("jsonl", "--format", help="jsonl (one record per sample) or text."),
    chat_template: Optional[Path] = TemplateOpt,
    api_key: Optional[str] = ApiKeyOpt,
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
) -> None:
    """Generate from prompts with a preset; JSONL records with text, usage, timing and (optionally) every token's candidates.

    \f
    Long because of its signature: some 40 lines of typer option declarations; the body reads as its
    stages (options checked, prompts read, model loaded, rows encoded, to stdout or to a file).
    """
    if format not in ("jsonl", "text"):
        raise InputError(f"unknown --format {format!r}; use jsonl or text")
    if context_overflow not in ("error", "truncate"):
        raise InputError(f"unknown --context-overflow {context_overflow!r}; use error or truncate")
    if output is not None:
        write_target(output)  # a missing folder, a folder or a device: said before the model loads
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("under torchrun, generate needs --output FILE (the processes' records are merged there)")
    jobs = _read_jobs(prompt, input)
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
    params = get_preset(preset).params.replace(**{k: v for k, v in flags.items() if v is not None})
    dist = _join(device)
    eng = _load(model, str(dist.device) if dist.enabled else device, dtype, chat_template, api_key)
    rows = _encode_rows(eng, jobs, params, n, raw, context_overflow)
    run = _Run(eng, preset, format, top_logprobs, batch_size, show_progress=input is not None and dist.is_main)
    if output is None:
        tally = _generate_to_stdout(run, rows)
    else:
        settings = dict(model=str(model), preset=preset, raw=raw, format=format, top_logprobs=top_logprobs)
        settings.update(context_overflow=context_overflow, seeded=params.seed is not None)
        # The weights' type and the chat template decide the text too: a run resumed with another
        # --dtype or --chat-template does its rows again rather than mixing both in one file.
        template = getattr(eng.template, "source", None)
        settings.update(dtype=dtype, template=hashlib.sha256(template.encode()).hexdigest() if template else None)
        tally = _generate_to_file(run, rows, output, dist, settings)
    if tally.rows and tally.failed == tally.rows:  # every row failed: the model is broken, not one prompt
        raise typer.Exit(2)


class _Row(NamedTuple):
    index: int  # in input order: prompt p's sample i is row p * n + i
    sample: int
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

    def bar(self, total: int):
        from tiankong.trainers.progress import progress

        return progress("generating", total, enabled=self.show_progress, console=err)


@dataclass
class _Tally:
    """Rows this run generated and failed (over every process once the run ends)."""

    rows: int = 0
    failed: int = 0


def _join(device: str) -> Any:
    """This process's place under torchrun (a single process without it). Each process uses its own
    GPU; barriers wait up to a day for the slowest process's last batch."""
    from datetime import timedelta

    from tiankong.trainers.distributed import init_distributed

    return init_distributed(device, timeout=timedelta(days=1))


def _encode_rows(eng: Any, jobs: list, params: Any, n: int, raw: bool, overflow: str) -> list[_Row]:
    """Every (prompt, sample) row with the row's seed, every prompt encoded and checked against the
    context before any output. The seed depends only on the sample index, never on batching or on
    which process generates the row."""
    from tiankong.engine.engine import draw_seed

    rows = []
    for where, job in jobs:
        dropped = 0
        try:
            if overflow == "truncate" and job.get("messages") is not None:
                ids, dropped = eng.fit(job["messages"], params.max_new_tokens, raw=raw)
            else:
                ids = eng.encode(prompt=job.get("prompt"), messages=job.get("messages"), raw=raw)
                eng.check_fits(ids)
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        for i in range(n):
            s = (params.seed + i) % 2**64 if params.seed is not None else draw_seed()
            rows.append(_Row(len(rows), i, job, ids, params.replace(seed=s), dropped))
    return rows


def _generate_to_stdout(run: _Run, rows: list[_Row]) -> _Tally:
    """Batches in order, each printed when done; one text prompt streams its tokens as they come."""
    tally = _Tally()
    stream = sys.stdout if run.format == "text" and len(rows) == 1 else None
    with stdout_errors(), run.bar(len(rows)) as advance:
        for start in range(0, len(rows), run.batch_size):
            batch = rows[start : start + run.batch_size]
            sys.stdout.write("".join(_generate_batch(run, batch, advance, tally, stream)))
            sys.stdout.flush()
    return tally


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
    try:
        with part, run.bar(sum(map(len, mine))) as advance:
            for batch in mine:
                outs = _generate_batch(run, batch, advance, tally)
                part.append((r.index, keys[r.index], o) for r, o in zip(batch, outs, strict=True))
    except KeyboardInterrupt:
        _report_interrupt(output, len(rows) - len(todo) + part.written)
        raise typer.Exit(130) from None
    sums = dist.all_reduce_sum({"rows": tally.rows, "failed": tally.failed})  # also the barrier before the merge
    if dist.is_main:
        shards.merge(output, [(r.index, k) for r, k in zip(rows, keys, strict=True)])
    dist.close()
    return _Tally(int(sums["rows"]), int(sums["failed"]))


def _key_params(row: _Row, seeded: bool) -> dict:
    """The row's sampling parameters as they decide its output. A drawn seed is no setting (each run
    draws others), so a run without a seed that is resumed still finds the rows finished before."""
    return row.params.to_dict() if seeded else {**row.params.to_dict(), "seed": None}


def _generate_batch(run: _Run, batch: list[_Row], advance: Any, tally: _Tally, stream: Any = None) -> list[str]:
    """Generate one batch of rows; the output of each row (its JSONL record, or its text), in order.
    A failed row is reported and the others go on. stream: where tokens are written as they come."""
    from tiankong.engine.generate import HeldText

    tokens: list[list] = [[] for _ in batch]
    done: dict[int, Any] = {}
    held = [HeldText(r.params.stop) for r in batch]  # no part of a stop string is streamed
    for ev in run.eng.generate([r.ids for r in batch], [r.params for r in batch], top_logprobs=run.top_logprobs):
        if hasattr(ev, "finish_reason"):
            done[ev.row] = ev
            advance()
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
            rec = _record(r.job, run.preset, r.params, fin, tokens[b] if run.top_logprobs else None, r.dropped)
            outs.append(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            outs.append("\n" if stream is not None else fin.text + "\n\n")
    tally.rows += len(batch)
    return outs


def _report_interrupt(output: Path, kept: int) -> None:
    s = "s" if kept != 1 else ""
    where = f"the {kept} finished record{s} are kept in {output}.part-*" if kept else "nothing had finished"
    err.print(
        f"interrupted: {output} is unchanged; {where}; the same command again generates the rest",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


# ---------------------------------------------------------------- tokenize / info / presets


@app.command(
    epilog="""[bold]Examples[/bold]

  tiankong tokenize -m ../shared/models/stories260K "Once upon a time"

  tiankong tokenize -m ./Qwen2 --format jsonl "你好, world"
"""
)
def tokenize(
    text: str = typer.Argument(..., help="Text to tokenize."),
    model: Optional[str] = ModelOpt,  # str, not Path: typer's Path checks would answer in a box, not one line
    format: str = typer.Option("table", "--format", help='table or jsonl ({"ids": [...], "pieces": [...]}).'),
) -> None:
    """Show how TEXT splits into tokens (ids and pieces), with the special tokens the model adds."""
    from tiankong.engine.tokenizer import load_tokenizer

    if format not in ("table", "jsonl"):
        raise InputError(f"unknown --format {format!r}; use table or jsonl")
    folder = _model_dir(model)
    if not folder.exists():
        raise InputError(f"model folder {folder} does not exist; pass --model with a local model folder")
    tok = load_tokenizer(folder)  # a folder or a GGUF file
    ids = tok.encode(text, add_special_tokens=True)
    pieces = [tok.id_to_piece(i) for i in ids]
    if format == "jsonl":
        print(json.dumps({"ids": ids, "pieces": pieces}, ensure_ascii=False))
        return
    table = Table(title=f"{len(ids)} tokens", show_edge=False)
    for col in ("#", "id", "piece", "text"):
        table.add_column(col, justify="right" if col in ("#", "id") else "left")
    for n, (i, p) in enumerate(zip(ids, pieces, strict=True)):
        special = " [dim](special)[/dim]" if i in tok.special_ids else ""
        table.add_row(str(n), str(i), repr(p)[1:-1] + special, repr(tok.token_text(i)))
    Console(emoji=False).print(table)


@app.command(
    epilog="""[bold]Examples[/bold]

  tiankong info -m ../shared/models/stories260K

  tiankong info -m ./TinyLlama --format json
"""
)
def info(
    model: Optional[str] = ModelOpt,  # str, not Path: typer's Path checks would answer in a box, not one line
    format: str = typer.Option("table", "--format", help="table or json."),
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
) -> None:
    """What a model is made of: architecture, parameters, positions, context, vocabulary, dtype, chat template."""
    if format not in ("table", "json"):
        raise InputError(f"unknown --format {format!r}; use table or json")
    facts = _load(model, device, dtype).info()
    if format == "json":
        print(json.dumps(facts))
        return
    from .screens.tokens import fact_text

    table = Table(show_header=False, show_edge=False)
    for k, v in facts.items():
        label = "file" if k == "folder" and not os.path.isdir(v) else k.replace("_", " ")  # a GGUF file
        table.add_row(label, fact_text(k, v))
    Console(emoji=False).print(table)


@app.command(
    epilog="""[bold]Examples[/bold]

  tiankong models

  tiankong models --format json

  tiankong chat -m HuggingFaceTB/SmolLM2-135M-Instruct      # a name from the list

Searched, offline: the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub),
LM Studio (~/.lmstudio/models, ~/.cache/lm-studio/models) and Ollama ($OLLAMA_MODELS, else ~/.ollama/models;
as ollama:NAME:TAG). A place that cannot be read is skipped and named on stderr."""
)
def models(format: str = typer.Option("table", "--format", help="table or json.")) -> None:
    """The models on this machine that --model takes by name: the bundled one, then the caches."""
    from tiankong.engine.resolve import list_models

    if format not in ("table", "json"):
        raise InputError(f"unknown --format {format!r}; use table or json")
    skipped: list[str] = []
    found = list_models(skipped)
    for note in skipped:  # stderr: the JSON on stdout stays whole
        err.print(f"skipped: {note}", highlight=False, markup=False, soft_wrap=True)
    if format == "json":
        print(json.dumps([m.to_json() for m in found], ensure_ascii=False))
        return
    table = Table(title=f"{len(found)} models", show_edge=False)
    for col in ("name", "architecture", "size", "dtype", "where"):
        table.add_column(col, justify="right" if col == "size" else "left", overflow="fold")
    for m in found:
        size = f"{m.parameters / 1e6:,.1f} M params" if m.parameters else f"{m.bytes / 2**20:,.1f} MiB"
        arch = escape(m.architecture or "?") + (" [dim](GGUF)[/dim]" if m.format == "gguf" else "")
        table.add_row(escape(m.name), arch, size, m.dtype or "?", f"{m.source}: {escape(_home(m.path))}")
    Console(emoji=False).print(table)


def _home(path: str) -> str:
    """A path under the home folder as ~/..., as people type it."""
    home = str(Path.home())
    return "~" + path[len(home) :] if path.startswith(home + os.sep) else path


@app.command(
    epilog="""[bold]Examples[/bold]

  tiankong presets

  tiankong presets creative
"""
)
def presets(name: Optional[str] = typer.Argument(None, help="Show one preset in full.")) -> None:
    """List the sampling presets (bundled and your own), or show one with its recommended ranges."""
    from tiankong.engine.params import SAMPLER_CHAIN
    from tiankong.presets import user_presets_dir

    con = Console(emoji=False)
    if name is None:
        table = Table(title=f"presets (yours go in {user_presets_dir()})", show_edge=False)
        table.add_column("name", no_wrap=True)
        table.add_column("use", ratio=1)
        for col in ("temp", "top-k", "top-p", "min-p", "rep.pen", "seed"):
            table.add_column(col, no_wrap=True, justify="right")
        for p in load_presets().values():
            s = p.params
            default = " [dim]*[/dim]" if p.name == DEFAULT_PRESET else ""
            table.add_row(
                p.name + default,
                p.use,
                f"{s.temperature:g}",
                str(s.top_k),
                f"{s.top_p:g}",
                f"{s.min_p:g}",
                f"{s.repetition_penalty:g}",
                "random" if s.seed is None else str(s.seed),
            )
        con.print(table)
        con.print(f"* the default.  sampler chain: {' -> '.join(SAMPLER_CHAIN)}")
        return
    p = get_preset(name)
    con.print(f"[bold]{p.name}[/bold]: {p.description}\n[dim]use:[/dim] {p.use}   [dim]file:[/dim] {p.source}")
    table = Table(show_edge=False)
    for col in ("parameter", "value", "recommended"):
        table.add_column(col)
    for key, value in p.params.to_dict().items():
        rec = p.recommended.get(key)
        table.add_row(key, str(value), f"{rec[0]:g} – {rec[1]:g}" if rec else "")
    con.print(table)
    con.print(f"sampler chain: {' -> '.join(SAMPLER_CHAIN)}")


# ---------------------------------------------------------------- the playground

DataDirOpt = typer.Option(
    None,
    "--data-dir",
    help="Where chats and votes are kept. Env: TIANKONG_DATA_DIR.",
    envvar="TIANKONG_DATA_DIR",
    show_default=False,
)


@app.command(
    epilog="""[bold]Examples[/bold]

  tiankong chat -m ../shared/models/stories260K --preset creative

  tiankong chat -m ./SmolLM2-135M-Instruct --data-dir ~/tiankong-data

  tiankong chat -m http://127.0.0.1:8000/v1      # a server: tiankong serve, vLLM, llama.cpp's server
"""
)
def chat(
    model: Optional[str] = ModelOrServerOpt,
    preset: str = typer.Option(DEFAULT_PRESET, help="Sampling preset to start with."),
    data_dir: Optional[Path] = DataDirOpt,
    rater: Optional[str] = typer.Option(None, help="Your name on votes (default: config or $USER)."),
    chat_template: Optional[Path] = TemplateOpt,
    api_key: Optional[str] = ApiKeyOpt,
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
) -> None:
    """Chat with a model and watch every token's candidates stream in."""
    from tiankong.tui.app import run_app

    get_preset(preset)  # fail fast, before the screen opens
    _local_only([model], device, dtype, chat_template)
    run_app(
        _playground_model(model, api_key),
        preset=preset,
        data_dir=data_dir,
        device=device,
        dtype=dtype,
        mode="chat",
        rater=rater,
        chat_template=_template_file(chat_template),
    )


def _compare_lineup(
    model: str | None, presets: str, models: str | None, api_key: str | None = None
) -> tuple[list[str], list[Any] | None]:
    """compare's contestants: 2 to 4 preset names, or two model folders (or servers) under the first preset."""
    names = [p.strip() for p in presets.split(",") if p.strip()]
    for name in names:
        get_preset(name)
    model_dirs = [_playground_model(m.strip(), api_key) for m in models.split(",") if m.strip()] if models else None
    if model_dirs is not None:
        if len(model_dirs) == 1:  # one folder: against --model (by default the bundled model)
            model_dirs.insert(0, _playground_model(model, api_key))
        if len(model_dirs) != 2:
            raise InputError(f"--models takes one or two folders, got {len(model_dirs)}; e.g. --models ./sft,./ppo")
        names = names[:1]
    elif not 2 <= len(names) <= 4:
        raise InputError(f"--presets takes 2 to 4 presets, got {len(names)}; e.g. --presets balanced,creative")
    return names, model_dirs


@app.command(
    epilog="""[bold]Examples[/bold]

  tiankong compare -m ../shared/models/stories260K --presets balanced,creative

  tiankong compare --models ./sft,./ppo --presets balanced

  tiankong compare --models runs/ppo          # the bundled model against your PPO policy

  tiankong compare --prompts prompts.txt --repeat 2   # one prompt after another; reopens where you stopped

  tiankong compare -m http://127.0.0.1:8000/v1 --presets balanced,creative   # on a server
"""
)
def compare(
    model: Optional[str] = ModelOrServerOpt,
    presets: str = typer.Option("balanced,creative", help="2 to 4 presets, comma-separated."),
    models: Optional[str] = typer.Option(
        None,
        help="Two model folders, comma-separated, to compare instead "
        "(one folder: compared with --model, by default the bundled model).",
    ),
    data_dir: Optional[Path] = DataDirOpt,
    rater: Optional[str] = typer.Option(None, help="Your name on votes (default: config or $USER)."),
    prompts: Optional[Path] = typer.Option(
        None,
        "--prompts",
        help='A queue of prompts (text lines, or JSONL with "prompt" or "messages"), one round after another.',
    ),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Rounds per prompt of --prompts, each with new seeds."),
    restart: bool = typer.Option(False, "--restart", help="Start --prompts from its first prompt again."),
    chat_template: Optional[Path] = TemplateOpt,
    api_key: Optional[str] = ApiKeyOpt,
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
) -> None:
    """Run presets (or two models) side by side on one prompt (or a file of them) and rank the answers."""
    from tiankong.tui.app import run_app

    chat_template = _local_only([model, *(models or "").split(",")], device, dtype, chat_template)
    names, model_dirs = _compare_lineup(model, presets, models, api_key)
    first = model_dirs[0] if model_dirs else _playground_model(model, api_key)
    if prompts is None:
        if repeat != 1 or restart:
            raise InputError("--repeat and --restart apply to a prompt file; add --prompts FILE")
        run_app(
            first,
            preset=names[0],
            data_dir=data_dir,
            device=device,
            dtype=dtype,
            mode="compare",
            compare_presets=names,
            compare_models=model_dirs,
            rater=rater,
            chat_template=chat_template,
        )
        return
    from tiankong.tui.arena import run_compare_queue
    from tiankong.tui.queue import prompt_queue

    queue = prompt_queue(prompts, repeat)
    run_compare_queue(
        first,
        queue,
        presets=names,
        models=model_dirs,
        data_dir=data_dir,
        device=device,
        dtype=dtype,
        rater=rater,
        restart=restart,
        chat_template=chat_template,
    )


@app.command(
    epilog="""[bold]Examples[/bold]

  tiankong generate --input prompts.txt --n 4 -o answers.jsonl && tiankong rank --input answers.jsonl

  tiankong rank --input big-model-answers.jsonl --model llama-70b --rater alice

Lines are generate's records (prompt or messages, text, preset, params, seed, finish_reason; optional
model and id), grouped by prompt; a prompt with more than 4 answers is ranked in groups of up to 4."""
)
def rank(
    input: Path = typer.Option(
        ..., "--input", "-i", help="JSONL of answers, e.g. from `tiankong generate --n K`.", show_default=False
    ),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        "-m",
        help='Model name stored for lines without a "model" field (generate\'s own output has none). Default: unknown.',
    ),
    data_dir: Optional[Path] = DataDirOpt,
    rater: Optional[str] = typer.Option(None, help="Your name on votes (default: config or $USER)."),
    restart: bool = typer.Option(False, "--restart", help="Start from the file's first prompt again."),
) -> None:
    """Rank, blind, answers made earlier: the compare screen's keys, no model needed."""
    from tiankong.tui.arena import run_rank
    from tiankong.tui.queue import answers_queue

    run_rank(answers_queue(input, model=model), data_dir=data_dir, rater=rater, restart=restart)


# ---------------------------------------------------------------- serve


@app.command(
    epilog="""[bold]Examples[/bold]

  tiankong serve -m ../shared/models/stories260K --port 8000

  TIANKONG_API_KEY=secret tiankong serve -m ./SmolLM2-135M-Instruct --host 0.0.0.0
"""
)
def serve(
    model: Optional[str] = ModelOpt,  # str, not Path: typer's Path checks would answer in a box, not one line
    host: str = typer.Option("127.0.0.1", help="Address to bind; any but loopback needs --api-key."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
    api_key: Optional[str] = typer.Option(
        None,
        help="Require Authorization: Bearer KEY. Env: TIANKONG_API_KEY.",
        envvar="TIANKONG_API_KEY",
        show_default=False,
    ),
    max_rows: int = typer.Option(16, min=1, help="Rows decoded together (the batch's width)."),
    max_queue: int = typer.Option(64, min=0, help="Requests waiting for a row; past that, 429."),
    timeout: float = typer.Option(600.0, min=1, help="Seconds per request; rows still running are then cancelled."),
    prefix_cache: int = typer.Option(
        256, min=0, help="MiB kept of recent prompts' keys and values, so requests that start alike skip that part."
    ),
    prefill_chunk: int = typer.Option(
        256, min=1, help="Prompt tokens read between two decode steps, so a long prompt does not stall the others."
    ),
    chat_template: Optional[Path] = TemplateOpt,
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
) -> None:
    """Serve the model over OpenAI's HTTP API (chat and completions, streaming, logprobs with p_sample)."""
    from tiankong.tui.serve import ServeConfig, check_bind
    from tiankong.tui.serve import serve as run_server

    cfg = ServeConfig(
        host=host,
        port=port,
        api_key=api_key,
        max_rows=max_rows,
        max_queue=max_queue,
        timeout_s=timeout,
        prefix_cache_mib=prefix_cache,
        prefill_chunk=prefill_chunk,
    )
    check_bind(cfg.host, cfg.api_key)  # before the model loads
    eng = _load(model, device, dtype, chat_template)
    run_server(eng, cfg)  # says "serving ... on ..." once the port is bound


# Commands that build their options from the trainers' config classes, whose modules import torch.
TORCH_GROUPS = ("train", "reward")


def _register_subcommands(argv: list[str]) -> None:
    """Add the command groups; `train` and `reward` only when this command line may need them.

    Their options come from the trainers' config dataclasses, and importing the trainers imports
    torch: half a gigabyte and a second or two that `prefs`, `presets`, `models` or `rank` never use.
    """
    from tiankong.tui.prefs import prefs_app

    have = {g.name for g in app.registered_groups}
    if "prefs" not in have:
        app.add_typer(prefs_app, name="prefs", help="Export, import and summarise preference votes.")
    words = [a for a in argv if not a.startswith("-")]
    if "train" not in have and (not words or words[0] in TORCH_GROUPS):  # also for the top-level --help
        from tiankong.tui.train_cli import reward_app, train_app

        app.add_typer(train_app, name="train")
        app.add_typer(reward_app, name="reward")


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    controls.install_rich()  # an escape sequence in a stranger's file, quoted in a line or table, stays inert
    try:
        code = _run()
    except Exception:
        if _process_group() is None:
            raise
        traceback.print_exc()  # a bug: its traceback, then the same way out as any other end
        code = 1
    group = _process_group()
    if group is not None:
        group.leave(code)  # a torchrun process: no interpreter finalization (see leave)
    sys.exit(code)


def _process_group() -> Any:
    """tiankong.trainers.distributed if this process joined a process group, else None (the module
    is imported only by the commands that may join one)."""
    group = sys.modules.get("tiankong.trainers.distributed")
    return group if group is not None and group.joined() else None


def _run() -> int:
    """The command's exit code."""
    try:
        _register_subcommands(sys.argv[1:])
        app()
    except SystemExit as done:  # typer ends every command so, 0 included
        return _exit_code(done.code)
    except TiankongError as e:
        err.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `tiankong generate ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def _exit_code(code: int | str | None) -> int:
    """sys.exit's argument as the process's status (a message goes to stderr, status 1)."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    main()
