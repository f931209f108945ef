"""Fixes from QA pass 38 (Gemma/Phi-3 GGUF journeys): the chat's status line shows max tokens capped
at the model's context, as f3 does; ctrl+t's model panel reachable by key (its decode row at 80x24);
a trainer's saved line says a quantized GGUF policy was saved dequantized, and how to load it small;
a KL estimate below 0 reads 0; `info`'s weight types say that Phi-3's fused tensors count as their
parts. On the tiny random models of tests/tiny_models.py (the Llama's context: 256 tokens)."""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import gguf
import pytest
import torch
from gguf_files import write_gguf
from screen_text import screen_lines
from test_tui_chat import run, wait_for
from test_tui_markup import chat_app
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static
from textual.widgets._footer import FooterKey
from tiny_models import make_model
from tui_host import Host

from tiankong.engine.engine import Engine
from tiankong.engine.model_facts import model_facts
from tiankong.trainers.verdict import kl_estimate, stall_warning
from tiankong.tui.screens.preset_editor import PresetEditor
from tiankong.tui.screens.tokens import TokensScreen
from tiankong.tui.train_cli import _dequantized


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama")


# ---------------------------------------------------------------- 4: the status line's max tokens


def test_the_status_line_and_ctrl_t_show_max_tokens_capped_at_the_context(tiny, store, tmp_path):
    # QA: "balanced T 0.7 · top-k 40 · top-p 0.9 · max 512" on a 256-token model whose f3 said 256,
    # and still 512 after f3 closed.
    async def go():
        async with chat_app(tiny, store, tmp_path) as (app, pilot, chat):
            context, most = chat.engine.cfg.max_seq_len, chat.params.max_new_tokens
            first = screen_lines(app)[0]
            await pilot.press("f3")
            await wait_for(pilot, lambda: isinstance(app.screen, PresetEditor))
            await pilot.press("enter")  # applied as it opened: the preset's own value, capped
            await wait_for(pilot, lambda: app.screen is chat)
            await pilot.pause()
            after = screen_lines(app)[0]
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: isinstance(app.screen, TokensScreen))
            head = str(app.screen.query_one("#tokens-head", Static).render())
            return context, most, first, after, head

    context, most, first, after, head = run(go())
    assert (context, most) == (256, 512)  # balanced's 512 over the tiny model's context
    for line in (first, after):
        assert f"max {context}" in line and f"max {most}" not in line, line
    assert f"(max tokens {context})" in head and f"max tokens {most}" not in head, head


# ---------------------------------------------------------------- 5: ctrl+t's model panel by key


def test_m_takes_the_keys_to_the_model_panel_so_its_decode_row_is_reached_at_80x24(tiny):
    eng = Engine.load(tiny)
    screen = TokensScreen(eng, [{"role": "user", "content": "hello there"}], max_new_tokens=64)

    def decode_shown(app) -> bool:
        return any(re.search(r"│\s+decode\s", line) for line in screen_lines(app))

    async def go():
        app = Host(screen)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            before = decode_shown(app)
            footer = [k.description for k in app.screen.query(FooterKey)]
            await pilot.press("m")
            await pilot.pause()
            focused = app.focused
            await pilot.press("end")
            # the scroll to the end may take some frames: wait for the row (or time out: not reached)
            with contextlib.suppress(AssertionError):
                await wait_for(pilot, lambda: decode_shown(app), timeout=10)
            reached = decode_shown(app)
            await pilot.press("m")
            await pilot.pause()
            return before, footer, focused, reached, app.focused

    before, footer, focused, reached, back = run(go())
    assert not before  # at 80x24 the panel runs past the bottom: the key is needed
    assert "model panel" in footer, footer
    assert isinstance(focused, VerticalScroll) and focused.id == "tokens-info"
    assert reached
    assert isinstance(back, DataTable)


# ---------------------------------------------------------------- 6: a dequantized GGUF policy, said


@pytest.fixture(scope="module")
def ggufs(tiny, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ggufs")
    return {q: write_gguf(tiny, root / f"tiny-{q}.gguf", q) for q in ("q4_0", "f32")}


def test_the_saved_line_says_a_quantized_gguf_policy_was_dequantized(ggufs, tiny, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x" * 7_500_000)  # what the trainer wrote

    def note(model: Path | str, name: str = "dpo") -> str:
        return _dequantized(
            SimpleNamespace(cfg=SimpleNamespace(model=str(model), dtype="float32"), name=name), tmp_path
        )

    said = note(ggufs["q4_0"])
    assert said.startswith(": float32 weights, 7.5 MB (the Q4_0 file's blocks were dequantized to train)"), said
    assert "`--dtype q4_0` or `q8_0`" in said
    assert "--dtype" not in note(ggufs["q4_0"], "reward")  # a reward model is loaded with none
    assert "dequantized" in note(ggufs["q4_0"], "reward")
    assert note(ggufs["f32"]) == note(tiny) == note("") == ""  # float weights: nothing grew


# ---------------------------------------------------------------- 7: a KL below 0 reads 0


def test_a_kl_estimate_below_zero_reads_zero():
    # QA: "warning: the policy hardly moved (KL -9.54e-07 nats, ...)" after --lr 1e-12.
    assert kl_estimate(torch.tensor([-3.0, -2.0]), torch.tensor([-3.0, -2.0 + 1.9e-6])) == 0.0
    assert kl_estimate(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.5])) == pytest.approx(0.5)
    assert "KL 0 nats" in stall_warning("implicit reward", 0.0, 1.0, kl_estimate(torch.zeros(2), torch.ones(2)))[0]


# ---------------------------------------------------------------- 8: info's weight types


def test_phi3_weight_types_count_matrices_and_say_the_fused_tensors_are_split(tmp_path):
    # QA: `q4_k x11, q6_k x5` for a file of 10 such tensors: the fused qkv and gate/up ones split.
    hf = make_model(tmp_path / "phi3", "phi3")
    path = write_gguf(hf, tmp_path / "phi3-q4_0.gguf", "q4_0")
    reader = gguf.GGUFReader(path)
    in_file = Counter(t.tensor_type.name.lower() for t in reader.tensors if t.tensor_type.name != "F32")
    layers = sum(t.name.endswith("attn_qkv.weight") for t in reader.tensors)
    facts = model_facts(path)
    counts, _, said = facts["weight_types"].partition(" (")
    shown = dict((k, int(v)) for k, v in re.findall(r"(\w+) x(\d+)", counts))
    assert shown == {"q4_0": in_file["q4_0"] + 3 * layers}  # each qkv 2 more, each gate_up 1 more
    assert said == "matrices: each fused q/k/v tensor counted as 3, gate/up as 2)"
    llama = model_facts(write_gguf(make_model(tmp_path / "llama", "llama"), tmp_path / "llama.gguf", "q4_0"))
    assert "(" not in llama["weight_types"]  # no fused tensors: nothing to say
