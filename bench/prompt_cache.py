"""Prompt cache benchmark: time to first token as a chat grows, with and without the cache.

    python bench/prompt_cache.py                 # 20 turns; llama.cpp beside it when importable
    python bench/prompt_cache.py --turns 20 --user-tokens 75 --answer-tokens 75 --repeats 5 --skip-llamacpp

A scripted chat on the SmolLM-135M-shaped model of bench/decode.py (random weights; the same
folder, with its context raised to --context, 4096 by default, so that 20 turns fit): each turn
adds a user message of --user-tokens fixed ids, then a greedy answer of --answer-tokens, so a turn
is ~150 tokens and turn 20's prompt ~2,900. At the turns in --measure (1, 10, 20) it times the
first token of the answer:

* cached — `generate(..., prompt_cache=...)` with the cache holding the chat up to the previous
  answer, as in `tiankong chat`: only the new message (and the previous answer's last token) is read;
* cold   — the same prompt with no cache: the whole chat is read again.

Each is the best of --repeats (cached) or --cold-repeats (cold) runs, taken after the chat is built,
the measured turns taking turns run by run so that a shared machine's drift hits them alike (the
cache is cut back to the start of the turn for each run, which is exact: PromptCache.ids names
the valid slots). llama.cpp (llama-cpp-python, the F32 GGUF of
bench/decode.py, n_ctx = --context) runs the same chat where it is importable: its generate()
keeps what it evaluated and reuses the longest common prefix with the next prompt, its own prompt
cache; reset() makes it cold. The target: cached TTFT at the last turn within 1.3x of turn 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import decode  # noqa: E402 (the model, tokenizer and GGUF are decode.py's)

MODEL_DIR = decode.OUT / "smollm-135m-random-long"
RESULT_JSON = decode.OUT / "prompt_cache.json"
TARGET = 1.3


def build(context: int, console) -> None:
    """decode.py's model (built if missing), hard-linked into MODEL_DIR with a longer context."""
    if not (decode.MODEL_DIR / "model.safetensors").is_file():
        console.print("[dim]building decode.py's random SmolLM-135M-shaped model...[/]")
        decode.build_model(0)
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    for f in decode.MODEL_DIR.iterdir():
        dest = MODEL_DIR / f.name
        if f.name == "config.json" or dest.exists():
            continue
        try:
            os.link(f, dest)
        except OSError:
            shutil.copy2(f, dest)
    cfg = json.loads((decode.MODEL_DIR / "config.json").read_text())
    cfg["max_position_embeddings"] = context
    (MODEL_DIR / "config.json").write_text(json.dumps(cfg, indent=2))


def message(turn: int, n: int) -> list[int]:
    """The user's message of turn `turn`: n fixed ids, different every turn, no special token."""
    return decode.prompt_ids(n * (turn + 1))[n * turn :]


class Watch:
    """Times runs and counts those that other processes disturbed: more than decode.QUIET of the
    CPUs taken during the run, decode.py's measure (this benchmark flags them; it does not wait or
    repeat)."""

    def __init__(self) -> None:
        self.runs = 0
        self.disturbed = 0
        self.last_share = 0.0

    def time(self, run: Callable[[], float]) -> float:
        before = decode.cpu_snapshot()
        seconds = run()
        self.last_share = decode.foreign_share(before, decode.cpu_snapshot())
        self.runs += 1
        self.disturbed += self.last_share > decode.QUIET
        return seconds

    def busy(self) -> str:
        """' (others used 45% of the CPUs: disturbed)' after a disturbed run, else ''."""
        return f" (others used {self.last_share:.0%} of the CPUs: disturbed)" if self.last_share > decode.QUIET else ""


def best_ttft(run: Callable[[], float], repeats: int, watch: Watch) -> float:
    return min(watch.time(run) for _ in range(max(1, repeats)))


def chat_tiankong(args, say: Callable[[str], None], watch: Watch) -> dict[str, dict[int, float]]:
    import torch

    from tiankong.engine.context import PromptCache
    from tiankong.engine.engine import Engine
    from tiankong.engine.events import Finished, TokenEvent
    from tiankong.engine.sampling import SamplingParams

    torch.set_num_threads(args.threads)
    eng = Engine.load(MODEL_DIR, device="cpu", dtype="float32")
    greedy = SamplingParams(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, seed=0, max_new_tokens=args.answer_tokens)
    cache, history = PromptCache(), []
    out: dict[str, dict[int, float]] = {"cached": {}, "cold": {}}

    def ttft(prompt: list[int], pc: PromptCache | None) -> float:
        t0 = time.perf_counter()
        for ev in eng.generate([prompt], [greedy.replace(max_new_tokens=1)], prompt_cache=pc):
            if isinstance(ev, TokenEvent):
                return time.perf_counter() - t0
        raise AssertionError("no token")

    ttft(message(0, args.user_tokens), None)  # warm-up
    prompts, before = {}, {}  # per measured turn: its prompt, and the cache's ids when it starts
    for turn in range(1, args.turns + 1):
        prompt = history + message(turn, args.user_tokens)
        if turn in args.measure:
            prompts[turn], before[turn] = prompt, list(cache.ids)
        answer = []
        for ev in eng.generate([prompt], [greedy], prompt_cache=cache):
            if isinstance(ev, Finished):
                answer = list(ev.token_ids)
        history = prompt + answer
        say(f"tiankong: chat built to turn {turn}/{args.turns} ({len(history)} tokens)")
    # The measured turns take turns, run by run, so that the machine's drift hits them alike. The
    # cache, which now holds the whole chat, is cut back to each turn's start (exact: its first
    # slots are that turn's chat so far).
    for rep in range(args.repeats):
        for turn in args.measure:
            cache.ids = list(before[turn])
            t = watch.time(lambda turn=turn: ttft(prompts[turn], cache))
            out["cached"][turn] = min(t, out["cached"].get(turn, t))
            line = f"tiankong: run {rep + 1}/{args.repeats}, turn {turn}: cached {1000 * t:.0f} ms{watch.busy()}"
            if rep < args.cold_repeats:
                t = watch.time(lambda turn=turn: ttft(prompts[turn], None))
                out["cold"][turn] = min(t, out["cold"].get(turn, t))
                line += f", cold {1000 * t:.0f} ms{watch.busy()}"
            say(line)
    out["decode_path"] = eng.decode_path
    out["final_tokens"] = len(history)
    return out


def chat_llamacpp(args, say: Callable[[str], None], watch: Watch) -> dict[str, dict[int, float]] | None:
    if not (decode.importable("llama_cpp") and decode.importable("gguf")):
        return None
    if not decode.GGUF_PATH.is_file():
        decode.convert_to_gguf()
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(decode.GGUF_PATH),
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_ctx=args.context,
        logits_all=False,
        verbose=False,
    )
    out: dict[str, dict[int, float]] = {"cached": {}, "cold": {}}

    def ttft(prompt: list[int], cold: bool) -> float:
        if cold:
            llm.reset()
        t0 = time.perf_counter()
        for _ in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            return time.perf_counter() - t0
        raise AssertionError("no token")

    def answer(prompt: list[int]) -> list[int]:
        toks = []
        for tok in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            toks.append(int(tok))
            if len(toks) == args.answer_tokens:
                break
        return toks

    ttft(message(0, args.user_tokens), True)  # warm-up
    history: list[int] = []
    for turn in range(1, args.turns + 1):
        prompt = history + message(turn, args.user_tokens)
        if turn in args.measure:

            def cached(history: list[int] = history, prompt: list[int] = prompt) -> float:
                llm.reset()  # evaluate the chat so far (not timed), then time the new turn
                if history:
                    llm.eval(history[:-1])  # as after a real answer: its last token not yet fed
                return ttft(prompt, False)

            out["cached"][turn] = best_ttft(cached, args.repeats, watch)
            out["cold"][turn] = best_ttft(lambda prompt=prompt: ttft(prompt, True), args.cold_repeats, watch)
            say(
                f"llama.cpp: turn {turn}: cached {1000 * out['cached'][turn]:.0f} ms, "
                f"cold {1000 * out['cold'][turn]:.0f} ms (best of {args.repeats} and {args.cold_repeats})"
            )
            llm.reset()
        history = prompt + answer(prompt)
        say(f"llama.cpp: chat built to turn {turn}/{args.turns} ({len(history)} tokens)")
    return out


def main() -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=decode.Help)
    p.add_argument("--turns", type=int, default=20, help="turns of the scripted chat")
    p.add_argument(
        "--measure",
        type=lambda s: [int(x) for x in s.split(",")],
        default="1,10,20",
        help="turns to time, comma-separated",
    )
    p.add_argument("--user-tokens", type=int, default=75, help="tokens of each user message")
    p.add_argument("--answer-tokens", type=int, default=75, help="tokens of each greedy answer")
    p.add_argument("--context", type=int, default=4096, help="the model's context, raised to fit the chat")
    p.add_argument("--threads", type=int, default=2, help="threads of both engines")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per turn, cached (the best is kept)")
    p.add_argument("--cold-repeats", type=int, default=2, help="timed runs per turn, cold")
    p.add_argument("--skip-llamacpp", action="store_true", help="leave llama.cpp out")
    args = p.parse_args()
    args.measure = [t for t in args.measure if 1 <= t <= args.turns]
    console = Console()
    note = None if args.skip_llamacpp else decode.llamacpp_note("llama.cpp skipped")
    if note:
        console.print(note, style="yellow", markup=False)
    build(args.context, console)

    def say(line: str) -> None:
        console.print(f"[dim]{escape(line)}[/]")

    watch = Watch()
    results = {"tiankong": chat_tiankong(args, say, watch)}
    console.print(f"[dim]tiankong decode path: {results['tiankong']['decode_path']}[/]")
    llama = None if args.skip_llamacpp or note else chat_llamacpp(args, say, watch)
    if llama is not None:
        results["llama.cpp"] = llama

    per_turn = args.user_tokens + args.answer_tokens
    table = Table(title=f"time to first token, ms ({args.threads} threads; turns of {per_turn} tokens)")
    table.add_column("turn", justify="right")
    table.add_column("prompt tokens", justify="right")
    for fw in results:
        table.add_column(f"{fw} cached", justify="right")
        table.add_column(f"{fw} cold", justify="right")
    for t in args.measure:
        row = [str(t), str(per_turn * (t - 1) + args.user_tokens)]
        for r in results.values():
            row += [f"{1000 * r['cached'][t]:.0f}", f"{1000 * r['cold'][t]:.0f}"]
        table.add_row(*row)
    console.print(table)
    first, last = args.measure[0], args.measure[-1]
    for fw, r in results.items():
        ratio = r["cached"][last] / r["cached"][first]
        ok = "[green]ok[/]" if ratio <= TARGET else "[red]MISSED[/]"
        console.print(
            f"{fw}: cached turn {last} / turn {first} = {ratio:.2f}x (target <= {TARGET}x) {ok}; "
            f"cold turn {last} / cached = {r['cold'][last] / r['cached'][last]:.1f}x"
        )
    if watch.disturbed:
        console.print(
            f"[yellow]other processes took more than {decode.QUIET:.0%} of the CPUs during {watch.disturbed} of "
            f"{watch.runs} timed runs: the times above are not to be trusted; rerun on a quiet machine[/]"
        )
    busy = {"timed_runs": watch.runs, "disturbed_runs": watch.disturbed}
    RESULT_JSON.write_text(json.dumps({"args": vars(args), "results": results, "machine": busy}, indent=2))
    console.print(f"[dim]{RESULT_JSON}[/]")


if __name__ == "__main__":
    main()
