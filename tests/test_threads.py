"""The compiled step's thread count: its choice under a busy machine (engine/threads.py), and the
bits a step gives on any number of threads."""

from __future__ import annotations

import pytest
import torch
from tiny_models import STORIES, make_model

from tiankong.engine import native
from tiankong.engine.engine import Engine
from tiankong.engine.kv_cache import KVCache
from tiankong.engine.threads import ThreadChoice


def run(choice: ThreadChoice, steps: int, full_s: float, single_s: float, batch: int = 1) -> str:
    """Feed `steps` steps that take full_s on all threads and single_s on one -> the thread counts used."""
    used = []
    for _ in range(steps):
        n = choice.threads()
        used.append(n)
        choice.record(batch, full_s if n == choice.full else single_s)
    return "".join(map(str, used))


def test_a_quiet_machine_keeps_every_thread():
    c = ThreadChoice(2)
    assert run(c, 50, 0.004, 0.007) == "2" * 50


def test_a_busy_machine_moves_to_one_thread_and_retries_ever_later():
    """Steps 75x slower on two threads (another program holds a core): one slow step, a one-thread
    probe that wins, then holds of 16, 32, 64 one-thread steps, each retry ending at its first
    slow step; quiet again, a retry of three fast steps returns to all threads."""
    c = ThreadChoice(2)
    run(c, 5, 0.004, 0.007)
    used = run(c, 1 + 1 + 16 + 1 + 32 + 1 + 64, 0.3, 0.008)
    assert used == "2" + "1" + "1" * 16 + "2" + "1" * 32 + "2" + "1" * 64
    # Quiet again, ten steps into the next hold of 128: one thread until the retry, which wins.
    assert run(c, 1 + 10, 0.3, 0.008) == "2" + "1" * 10
    assert run(c, 118 + 21, 0.004, 0.007) == "1" * 118 + "2" * 21


def test_a_slow_step_that_is_the_work_itself_is_not_a_stall():
    """Four times the rows (or a long context) makes a step slower on one thread too: one probe,
    then the slow time is the usual one and all threads stay."""
    c = ThreadChoice(2)
    run(c, 5, 0.004, 0.007)
    assert run(c, 20, 0.012, 0.02) == "2" + "1" + "2" * 18


def test_batch_sizes_keep_their_own_usual_time():
    c = ThreadChoice(2)
    run(c, 5, 0.004, 0.007, batch=1)
    assert run(c, 5, 0.012, 0.02, batch=8) == "22222"  # a first step at 8 rows sets its own usual


def test_one_thread_machines_never_change():
    c = ThreadChoice(1)
    assert run(c, 10, 0.3, 0.3) == "1" * 10


def step_logits(eng: Engine, threads: int, rows: int = 3, slots: int = 70) -> torch.Tensor:
    """One compiled decode step on `threads` threads from a fixed random cache and input."""
    cfg, step = eng.cfg, eng.model._native
    assert step is not None
    gen = torch.Generator().manual_seed(0)
    cache = KVCache(cfg.n_layers, rows, cfg.n_kv_heads, slots + 1, cfg.head_dim, step.dtype, "cpu")
    cache.kv.copy_(torch.randn(cache.kv.shape, generator=gen))
    x = torch.randn(rows, cfg.dim, generator=gen)
    step.threads = ThreadChoice(threads)
    return step(x, torch.full((rows, 1), slots), None, cache, slots)


@pytest.mark.parametrize("source", ["stories", "llama-ffn-100", "gpt2"])
def test_a_step_gives_the_same_bits_on_any_number_of_threads(source, tmp_path):
    """Attention's slot ranges and the activations' last partial vector do not depend on where a
    thread's share begins, so the busy-machine fallback to one thread changes no output."""
    if native.library() is None:
        pytest.skip(f"no compiled decode step here: {native.reason()}")
    if source == "stories":
        if not STORIES.is_dir():
            pytest.skip("../shared/models/stories260K is absent")
        folder = STORIES
    elif source == "gpt2":
        folder = make_model(tmp_path, "gpt2")
    else:  # an FFN width whose thread shares end mid-vector
        folder = make_model(tmp_path, "llama", intermediate_size=100)
    eng = Engine.load(folder, device="cpu", dtype="float32")
    one = step_logits(eng, 1)
    for threads in (2, 3):
        assert torch.equal(step_logits(eng, threads), one), f"{threads} threads differ from one"
