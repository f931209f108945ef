"""How fast the chat playground streams an answer, against the engine alone on the same prompt.

    python bench/tui_stream.py                                  # 135M Q4_0 GGUF if built, 3 rounds + a warm-up
    python bench/tui_stream.py --model ../shared/models/stories260K --tokens 400
    python bench/tui_stream.py --switch-interval 0.005 --fps 30  # the settings before 2026-12-06
    python bench/tui_stream.py --no-model-thread                 # loading and answering as before
    python bench/tui_stream.py --compare                         # `tiankong compare`, its four presets

The model's decode tok/s is what `Finished.timing` reports (first token to last), so the prompt's
prefill is out of both figures. The two take turns, round by round, after a warm-up round that is
printed but not counted:

* engine — `Engine.generate` on a copy of the model loaded on the app's model thread
           (streaming.on_engine_thread), run there on the chat's own prompt (`Engine.fit` of the
           conversation: the chat template and its system prompt), the chat's preset with a fixed
           seed, 10 candidates a token as the chat records.
* chat   — the real app (`TiankongApp`, driven headless by Textual's Pilot at --size), started as
           `tiankong chat` starts it (it loads the model), the message typed and sent; its answer
           streams through the chat screen's worker (tui/streaming.py) into the transcript and the
           candidates panel, which the app draws every frame (Textual's headless driver renders
           each frame and discards it: the terminal's own writing is the one thing missing
           against a real terminal). Each round a new app and chat.

--compare measures `tiankong compare` instead: the compare screen with its four presets (balanced,
creative, precise, chat) answering the message in one batch, against `Engine.generate` of the same
four rows. Compare seeds its rows at random; here both sides get seeds 1-4 and --tokens (the app's
generate call is wrapped to set them, and to read its Finished events: the screen shows no rate),
so both make the same tokens.

--switch-interval, --fps and --no-model-thread undo what the app does (app.GIL_SWITCH_S,
streaming.FRAME_S, streaming.on_engine_thread), so the effect of each can be measured on this
machine; --no-model-thread wants a process of its own (OpenMP's thread pools stay once made). The
default model is bench/quant.py's SmolLM-135M shape in Q4_0 (`python bench/quant.py` builds it,
with llama-cpp-python); where it is not built, stories260K, and a note says so. The 135M model's
random weights give random text, which wraps and re-parses as Markdown at least as hard as real
answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from decode import Help, llamacpp_note

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "bench" / "out" / "smollm-135m-random-q4_0.gguf"
STORIES = ROOT.parent / "shared" / "models" / "stories260K"
MESSAGE = "Tell me a story about a cat."
COMPARE = ("balanced", "creative", "precise", "chat")  # `tiankong compare --presets` with all four


def engine_alone(engine, params, ids: list[int]) -> float:
    """Decode tok/s of the engine alone on the chat's prompt."""
    from tiankong.engine.events import Finished

    fin = [ev for ev in engine.generate([ids], [params], top_logprobs=10) if isinstance(ev, Finished)]
    return fin[0].timing.decode_tokens_per_s


@contextlib.asynccontextmanager
async def started_app(model: Path, size: tuple[int, int], data: Path, **kwargs) -> AsyncIterator[tuple]:
    """(app, pilot, store): the playground headless, started as the CLI starts it (it loads the
    model itself) with its store in `data`, once the model is loaded."""
    import tiankong.tui.app as app_module
    from tiankong.tui.store import DB_NAME, Store

    store = Store(data / DB_NAME)
    app = app_module.TiankongApp(model, store=store, export_dir=data, **kwargs)
    try:
        async with app.run_test(size=size) as pilot:
            while app.engine is None:
                await pilot.pause(0.05)
            yield app, pilot, store
    finally:
        store.close()


async def chat_once(model: Path, params, size: tuple[int, int], data: Path) -> tuple[float, int]:
    """Decode tok/s of one answer streamed in the chat app, and its token count."""
    async with started_app(model, size, data, show_timing=True) as (app, pilot, store):
        chat = app.chat
        chat.params = params
        await pilot.press(*MESSAGE)
        await pilot.press("enter")
        await pilot.pause(0.2)
        while chat.generating:  # not pilot.pause: that waits on every widget, costing the UI thread
            await asyncio.sleep(0.05)
        # the answer's footer gets its rate a moment after generating ends (the worker's last
        # message): reading it at once sometimes found it empty
        for _ in range(100):
            timing = chat.messages[-1]._info
            if timing.endswith("tok/s"):
                break
            await asyncio.sleep(0.05)
        stored = store.get_chat(chat.chat_id).messages[-1]
        return float(timing.rsplit("·", 1)[1].split()[0]), len(stored.tokens)


def compare_params(tokens: int) -> list:
    """The four presets' params as both sides run them: seeds 1-4, `tokens` long."""
    from tiankong.presets import get_preset

    return [replace(get_preset(name).params, seed=i + 1, max_new_tokens=tokens) for i, name in enumerate(COMPARE)]


def engine_alone_compare(engine, tokens: int, ids: list[int]) -> float:
    """Decode tok/s of one row of the engine alone on the four presets' batch (the rows share it)."""
    from tiankong.engine.events import Finished

    fin = [ev for ev in engine.generate([ids] * 4, compare_params(tokens), top_logprobs=0) if isinstance(ev, Finished)]
    return statistics.median(f.timing.decode_tokens_per_s for f in fin)


async def compare_once(
    model: Path, tokens: int, size: tuple[int, int], data: Path, ids: list[int]
) -> tuple[float, int]:
    """Decode tok/s of one row of the four presets' batch as the compare screen streams it, and
    the tokens of its longest answer; the screen's prompt must be `ids`, the engine's."""
    from tiankong.engine.engine import Engine
    from tiankong.engine.events import Finished

    finished: list = []
    generate = Engine.generate

    def same_seeds(self, prompts, params, **kwargs):  # the screen's own call, with fixed seeds and lengths
        if any(list(p) != ids for p in prompts):
            raise RuntimeError("the compare screen's prompt is not the one the engine alone runs")
        for ev in generate(self, prompts, compare_params(tokens)[: len(params)], **kwargs):
            if isinstance(ev, Finished):
                finished.append(ev)
            yield ev

    Engine.generate = same_seeds
    try:
        async with started_app(model, size, data, mode="compare", compare_presets=list(COMPARE)) as (_, pilot, _):
            await pilot.pause(0.2)
            await pilot.press(*MESSAGE)
            await pilot.press("enter")
            deadline = time.monotonic() + 600
            while len(finished) < len(COMPARE):  # not pilot.pause (see chat_once)
                if time.monotonic() > deadline:
                    raise RuntimeError("the compare screen did not finish its four answers in 10 minutes")
                await asyncio.sleep(0.05)
    finally:
        Engine.generate = generate
    rate = statistics.median(f.timing.decode_tokens_per_s for f in finished)
    return rate, max(f.usage.completion_tokens for f in finished)


def default_model() -> tuple[Path, str | None]:
    """(model, note): quant.py's Q4_0 file, or where it is not built stories260K, with a note
    saying why and how to build it."""
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL, None
    build = llamacpp_note("it cannot be built") or "`python bench/quant.py --types q4_0` builds it"
    return STORIES, f"no {DEFAULT_MODEL.relative_to(ROOT)} ({build}): running stories260K instead"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=Help)
    ap.add_argument("--model", type=Path, help=f"the model (default: {DEFAULT_MODEL.name} if built, else stories260K)")
    ap.add_argument("--tokens", type=int, default=256, help="answer length (max_new_tokens)")
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds, after one warm-up round")
    ap.add_argument("--preset", default="balanced", help="the chat's preset")
    ap.add_argument("--compare", action="store_true", help="the compare screen's four presets instead of the chat")
    ap.add_argument("--size", default="200x50", help="terminal columns x rows")
    ap.add_argument("--switch-interval", type=float, help="seconds (default: the app's GIL_SWITCH_S)")
    ap.add_argument("--fps", type=float, help="frames a second while streaming (default: 1 / streaming.FRAME_S)")
    ap.add_argument(
        "--no-model-thread",
        action="store_true",
        help="load and answer on Textual's thread workers, as the app did before on_engine_thread",
    )
    args = ap.parse_args()
    if args.model is None:
        args.model, note = default_model()
        if note:
            print(note, flush=True)

    import tiankong.tui.app as app_module
    import tiankong.tui.streaming as streaming
    from tiankong.engine.engine import Engine
    from tiankong.presets import get_preset

    if args.switch_interval is not None:
        app_module.GIL_SWITCH_S = args.switch_interval
    if args.fps is not None:
        streaming.stream_events.__defaults__ = (1 / args.fps,)
    if args.no_model_thread:
        streaming.on_engine_thread = app_module.on_engine_thread = lambda fn, *a, **kw: fn(*a, **kw)
    model = args.model
    if not model.exists():
        sys.exit(f"no model at {model}: pass --model a model folder or GGUF file")
    cols, rows = (int(v) for v in args.size.split("x"))
    # The engine alone on the app's model thread (with --no-model-thread: this thread), as the app runs it.
    engine = streaming.on_engine_thread(Engine.load, model)
    params = replace(get_preset(args.preset).params, seed=1, max_new_tokens=args.tokens)
    ids, _ = engine.fit([{"role": "user", "content": MESSAGE}], params.max_new_tokens)
    cids = engine.encode(messages=[{"role": "user", "content": MESSAGE}])  # what the compare screen sends
    what = f"{', '.join(COMPARE)} in one batch (seeds 1-4), tok/s of a row" if args.compare else args.preset
    print(
        f"{model.name}: {engine.decode_path}; {what}, {args.tokens} tokens, {args.size}, "
        f"switch interval {app_module.GIL_SWITCH_S * 1e3:g} ms, {1 / streaming.stream_events.__defaults__[0]:g} fps"
    )
    ui = "compare" if args.compare else "chat"
    results: dict[str, list[float]] = {"engine": [], ui: []}
    # Round 0 warms up and is not counted: the first answer on each side pays one-time costs (the
    # compiled step's first calls, the app's first frames and imports), ~10x slower on stories260K.
    for r in range(args.rounds + 1):
        with tempfile.TemporaryDirectory() as data:
            if args.compare:
                engine_tok_s = streaming.on_engine_thread(engine_alone_compare, engine, args.tokens, cids)
                tok_s, n = asyncio.run(compare_once(model, args.tokens, (cols, rows), Path(data), cids))
            else:
                engine_tok_s = streaming.on_engine_thread(engine_alone, engine, params, ids)
                tok_s, n = asyncio.run(chat_once(model, params, (cols, rows), Path(data)))
        what = f"round {r}" if r else "warm-up (not counted)"
        print(f"{what}: engine {engine_tok_s:.0f} tok/s, {ui} {tok_s:.0f} tok/s ({n} tokens)", flush=True)
        if r:
            results["engine"].append(engine_tok_s)
            results[ui].append(tok_s)
    e, c = statistics.median(results["engine"]), statistics.median(results[ui])
    ratios = [c_ / e_ for c_, e_ in zip(results[ui], results["engine"], strict=True)]
    print(
        f"median: engine {e:.0f} tok/s, {ui} {c:.0f} tok/s; {ui} / engine {statistics.median(ratios):.2f} "
        f"(rounds {min(ratios):.2f}-{max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
