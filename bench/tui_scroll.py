"""How fast the chat playground opens a long stored chat and scrolls through it.

    python bench/tui_scroll.py                      # bundled model, 200 messages, 100x30
    python bench/tui_scroll.py --messages 400 --model ../shared/models/stories260K

A temporary data folder gets a SQLite store holding one chat of --messages messages (half user
questions, half assistant answers: a few paragraphs of Markdown, some with lists, code blocks and
headings, each answer with per-token candidate data, 10 candidates a token, as the app stores
it), written through the store's public API. The real app is then driven headless with
`App.run_test()` (Textual's Pilot), and each step is timed two ways:

* frame   — from the key to the first frame drawn with the transcript moved (the screen publishes
            its layout-refresh signal right after drawing such a frame): what the user waits for.
* settled — to the end of `await pilot.pause()`: everything the step set off (say, old answers
            being realized in the background) is done and the app is idle again.

Steps:

* open     — `ctrl+o`, then `enter` on the chat, until its last message is drawn at the bottom
             (the list is already up, so only opening is timed); --opens times, each time from
             a new empty chat.
* no-op    — a key bound to nothing: Pilot's own cost per key (it waits on every widget of the
             screen, so it grows with their number); subtract it from the settled times.
* page-up  — `pageup` x --pages with the transcript focused.
* home/end — one `home` (to the first message), one `end` (back to the last).
* wheel    — --wheel mouse-wheel notches up over the transcript (MouseScrollUp events delivered to
             the widget under the pointer, as a terminal's are).

"in gc" is the time per step spent in Python's cyclic garbage collector. Scrolling animations are
switched off (`app.animation_level = "none"`), so each key is one jump and the time measured is
work, not animation length. The model is loaded before anything is timed; nothing in the app is
patched. On a shared machine the max column mostly measures the neighbours: compare medians.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from decode import Help

ROOT = Path(__file__).resolve().parent.parent
STORIES = ROOT.parent / "shared" / "models" / "stories260K"

WORDS = (
    "the model token probability answer story cat dog river mountain little girl boy garden "
    "window morning evening light rain sun moon friend house tree bird song small big happy "
    "quiet bright slowly quickly because when then after before every some many sample "
    "temperature candidate context layer weight train batch value reward policy gradient"
).split()
CODE = [
    "def top_k(logits, k):\n    values, ids = logits.topk(k)\n    return ids[values > -math.inf]",
    "for step in range(10):\n    loss = model(batch).loss\n    loss.backward()\n    opt.step()",
    "import torch\nx = torch.randn(4, 8)\nprint(x.softmax(-1).sum(-1))",
    "SELECT id, content FROM messages\nWHERE chat_id = ?\nORDER BY id;",
]


def sentence(rng: random.Random, n: int | None = None) -> str:
    words = [rng.choice(WORDS) for _ in range(n or rng.randint(6, 16))]
    if rng.random() < 0.3:
        i = rng.randrange(len(words))
        words[i] = rng.choice(["**", "`", "*"]).join(["", words[i], ""])
    return (" ".join(words)).capitalize() + rng.choice([".", ".", ".", "!", "?"])


def answer(rng: random.Random, i: int) -> str:
    """A few paragraphs of Markdown; every third answer has a code block, every fourth a list."""
    parts = []
    if i % 7 == 0:
        parts.append(f"## Part {i}")
    for _ in range(rng.randint(2, 4)):
        parts.append(" ".join(sentence(rng) for _ in range(rng.randint(2, 4))))
    if i % 4 == 1:
        parts.append("\n".join(f"- {sentence(rng, rng.randint(3, 8))}" for _ in range(rng.randint(2, 4))))
    if i % 3 == 0:
        parts.append("```python\n" + rng.choice(CODE) + "\n```")
        parts.append(sentence(rng))
    return "\n\n".join(parts)


def fake_tokens(rng: random.Random, text: str, top: int = 10) -> list[dict]:
    """Per-token candidate data shaped like the engine's (texts concatenate to `text`)."""
    pieces = re.findall(r"\s*\S{1,6}|\s+", text)
    out = []
    for piece in pieces:
        logits = sorted((rng.gauss(0, 2) for _ in range(top)), reverse=True)
        z = math.log(sum(math.exp(v) for v in logits)) + 0.3
        cands = [
            {
                "id": rng.randrange(4096),
                "text": rng.choice([piece, " " + rng.choice(WORDS), ",", "."]),
                "logprob": v - z,
                "p_sample": (math.exp(v - z) if j < 5 else 0.0),
            }
            for j, v in enumerate(logits)
        ]
        chosen = cands[rng.randrange(min(3, top))]
        out.append(
            {
                "id": chosen["id"],
                "text": piece,
                "logprob": chosen["logprob"],
                "p_sample": chosen["p_sample"],
                "entropy": rng.uniform(0.1, 4.0),
                "top": cands,
            }
        )
    return out


def fill_store(db: Path, model_id: str, n_messages: int, seed: int = 0) -> tuple[int, list[str]]:
    from tiankong.tui.store import Store

    rng = random.Random(seed)
    contents = []
    with Store(db) as store:
        chat_id = store.create_chat(model_id, "balanced", "", "a long chat for the scroll benchmark")
        for i in range(n_messages):
            if i % 2 == 0:
                text = f"Question {i // 2 + 1}: " + sentence(rng)
                store.add_message(chat_id, "user", text)
            else:
                text = answer(rng, i // 2)
                toks = fake_tokens(rng, text)
                params = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 1000 + i, "max_new_tokens": 256}
                store.add_message(
                    chat_id,
                    "assistant",
                    text,
                    preset="balanced",
                    params=params,
                    seed=1000 + i,
                    finish_reason="eos",
                    tokens=toks,
                )
            contents.append(text)
    return chat_id, contents


def stats(ms: list[float]) -> str:
    if not ms:
        return f"{'-':>8}"
    if len(ms) == 1:
        return f"{ms[0]:8.1f}"
    return f"{statistics.median(ms):8.1f} {statistics.mean(ms):8.1f} {max(ms):8.1f}"


async def drive(model: Path, db: Path, chat_id: int, contents: list[str], args: argparse.Namespace) -> dict:
    import cProfile

    from textual import events

    from tiankong.tui.app import TiankongApp
    from tiankong.tui.store import Store
    from tiankong.tui.widgets.message import AssistantMessage

    gc_ms: dict[str, float] = {}  # time in Python's garbage collector during each step, all repeats
    gc_start = [0.0]

    def gc_timer(phase: str, info: dict) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        elif gc_step[0] is not None:
            gc_ms[gc_step[0]] = gc_ms.get(gc_step[0], 0.0) + (time.perf_counter() - gc_start[0]) * 1000

    gc_step: list[str | None] = [None]
    gc.callbacks.append(gc_timer)
    settled: dict[str, list[float]] = {}  # key → idle again after `await pilot.pause()`
    first: dict[str, list[float]] = {}  # key → first frame drawn with the transcript moved
    frames: list[tuple[float, float]] = []  # (time, transcript scroll_y) of every layout/scroll frame
    profiles: dict[str, cProfile.Profile] = {}

    with Store(db) as store:
        app = TiankongApp(model, store=store, export_dir=db.parent, show_timing=False)
        async with app.run_test(size=(args.width, args.height)) as pilot:
            app.animation_level = "none"
            end = time.monotonic() + 120
            while app.engine is None and app.engine_error is None:
                if time.monotonic() > end:
                    raise SystemExit("the model did not load in 120 s")
                await pilot.pause(0.05)
            if app.engine_error:
                print(f"note: model not loaded ({app.engine_error}); timing the UI anyway", file=sys.stderr)
            chat = app.chat
            transcript = chat.transcript
            # Published by the screen right after it has drawn a frame with a new layout or scroll position.
            chat.screen_layout_refresh_signal.subscribe(
                chat, lambda _: frames.append((time.perf_counter(), transcript.scroll_y)), immediate=True
            )

            async def timed(name: str, act, done=lambda: True, moved=None) -> None:
                """Time `act()` + pause (until `done()`); and the first frame after it where `moved(scroll_y)`."""
                if args.profile and name not in profiles:
                    profiles[name] = cProfile.Profile()
                if name in profiles:
                    profiles[name].enable()
                start_y = transcript.scroll_y
                moved = moved or (lambda y: y != start_y)
                n = len(frames)
                gc_step[0] = name
                t0 = time.perf_counter()
                await act()
                await pilot.pause()
                while not done():
                    await pilot.pause()
                settled.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
                gc_step[0] = None
                if name in profiles:
                    profiles[name].disable()
                drawn = next((t for t, y in frames[n:] if moved(y)), None)
                first.setdefault(name, [])
                if drawn is not None:
                    first[name].append((drawn - t0) * 1000)

            # -- open (again and again: the chat list, then enter)
            for _ in range(args.opens):
                await chat.action_new_chat()
                await pilot.press("ctrl+o")
                await pilot.pause()

                async def open_it() -> None:
                    await pilot.press("enter")
                    while not (chat.chat_id == chat_id and len(chat.messages) == len(contents)):
                        await asyncio.sleep(0.001)

                await timed(
                    f"open (x{args.opens}; enter → bottom drawn)",
                    open_it,
                    done=lambda: transcript.max_scroll_y > 0 and transcript.scroll_y >= transcript.max_scroll_y,
                    moved=lambda y: y > 0 and y >= transcript.max_scroll_y,
                )
            msgs = chat.messages
            assert msgs[-1].region.bottom <= transcript.region.bottom and msgs[-1].region.height > 0, (
                "the last message is not on screen"
            )
            assert msgs[-1].content == contents[-1] and msgs[0].content == contents[0]

            transcript.focus()
            await pilot.pause()
            for _ in range(args.pages):  # Pilot's own cost per key (it waits on every widget)
                await timed("no-op key (Pilot's floor)", lambda: pilot.press("f24"))
            for _ in range(args.pages):
                await timed(f"page-up (x{args.pages})", lambda: pilot.press("pageup"))
            await timed("home", lambda: pilot.press("home"))
            assert transcript.scroll_y == 0 and msgs[0].region.y >= transcript.region.y, "home did not reach the top"
            await timed("end", lambda: pilot.press("end"), done=lambda: transcript.scroll_y >= transcript.max_scroll_y)

            # -- mouse wheel, delivered where the terminal would: to the widget under the pointer
            x, y = transcript.region.x + 5, transcript.region.y + 5

            async def wheel() -> None:
                event = events.MouseScrollUp(None, x, y, 0, -1, 0, False, False, False, screen_x=x, screen_y=y)
                app.mouse_position = event.offset
                app.screen._forward_event(event)

            for _ in range(args.wheel):
                await timed(f"wheel up (x{args.wheel})", wheel)

            # -- an old message is still what it was
            third = chat.messages[3]
            assert isinstance(third, AssistantMessage) and third.content == contents[3]
            widgets = len(list(app.screen.walk_children()))
    gc.callbacks.remove(gc_timer)
    for name, profile in profiles.items():
        path = f"{args.profile}.{name.split()[0]}"
        profile.dump_stats(path)
        print(f"profile of {name!r}: {path}", file=sys.stderr)
    return {"settled": settled, "first": first, "gc": gc_ms, "widgets": widgets}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=Help)
    ap.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model folder (default: the bundled model, else ../shared/models/stories260K)",
    )
    ap.add_argument("--messages", type=int, default=200, help="messages in the stored chat (half questions)")
    ap.add_argument("--opens", type=int, default=3, help="times the chat is opened")
    ap.add_argument("--pages", type=int, default=20, help="pageup presses")
    ap.add_argument("--wheel", type=int, default=30, help="mouse-wheel notches up")
    ap.add_argument("--width", type=int, default=100, help="terminal columns")
    ap.add_argument("--height", type=int, default=30, help="terminal rows")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the model only loads; 1 on a shared box)")
    ap.add_argument("--profile", metavar="PREFIX", help="write a cProfile of each step to PREFIX.STEP (default: none)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.model is None:
        from tiankong.models import default_model_dir

        args.model = default_model_dir()
        if not (Path(args.model) / "config.json").is_file():
            args.model = STORIES
    with tempfile.TemporaryDirectory(prefix="tiankong-scroll-") as tmp:
        db = Path(tmp) / "data" / "tiankong.db"
        t0 = time.perf_counter()
        chat_id, contents = fill_store(db, str(Path(args.model).resolve()), args.messages)
        setup = time.perf_counter() - t0
        result = asyncio.run(drive(Path(args.model), db, chat_id, contents, args))
        size = db.stat().st_size + sum(p.stat().st_size for p in db.parent.glob("*-wal"))

    chars = sum(map(len, contents))
    print(
        f"chat: {args.messages} messages, {chars} characters of text, store {size / 1e6:.1f} MB "
        f"(written in {setup:.1f} s); model {Path(args.model).name}; {args.width}x{args.height}; "
        f"{result['widgets']} widgets on the screen after the run"
    )
    print(f"{'ms':38} {'frame':>8} | {'settled: median':>17} {'mean':>8} {'max':>8} | {'in gc':>7}")
    for name, ms in result["settled"].items():
        frame = statistics.median(result["first"][name]) if result["first"][name] else None
        in_gc = result["gc"].get(name, 0.0) / len(ms)
        print(f"{name:38} {'-' if frame is None else f'{frame:.1f}':>8} | {stats(ms):>35} | {in_gc:7.1f}")


if __name__ == "__main__":
    main()
