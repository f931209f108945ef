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
    """Steps 75x slower on two threads (another program holds a core): two slow steps (one alone
    is noise), a one-thread probe that wins, then holds of 16, 32, 64 one-thread steps, each retry
    ending at its first slow step; quiet again, a retry of three fast steps returns to all threads."""
    c = ThreadChoice(2)
    run(c, 5, 0.004, 0.007)
    used = run(c, 2 + 1 + 16 + 1 + 32 + 1 + 64, 0.3, 0.008)
    assert used == "22" + "1" + "1" * 16 + "2" + "1" * 32 + "2" + "1" * 64
    # Quiet again, ten steps into the next hold of 128: one thread until the retry, which wins.
    assert run(c, 1 + 10, 0.3, 0.008) == "2" + "1" * 10
    assert run(c, 118 + 21, 0.004, 0.007) == "1" * 118 + "2" * 21


def test_a_slow_step_that_is_the_work_itself_is_not_a_stall():
    """A step three times slower that stays so (a much longer context) is slower on one thread
    too: one probe after the second slow step, then the slow time is the usual one."""
    c = ThreadChoice(2)
    run(c, 5, 0.004, 0.007)
    assert run(c, 20, 0.012, 0.02) == "22" + "1" + "2" * 17


def test_a_lone_slow_step_is_noise():
    """One stalled step among fast ones (a page fault, a collection) changes nothing."""
    c = ThreadChoice(2)
    run(c, 5, 0.004, 0.007)
    assert run(c, 1, 0.3, 0.008) + run(c, 40, 0.004, 0.007) == "2" * 41


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
    step.threads = ThreadChoice(threads)  # a fresh choice: all of torch's threads
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return step(x, torch.full((rows, 1), slots), None, cache, slots)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("source", ["stories", "llama-ffn-100", "gpt2", "q8_0", "gemma2", "gemma3 q8_0"])
def test_a_step_gives_the_same_bits_on_any_number_of_threads(source, tmp_path):
    """Attention's slot ranges and the activations' last partial vector do not depend on where a
    thread's share begins, so the busy-machine fallback to one thread changes no output. q8_0:
    quantized weights and their float16 cache, at head_dim 64 (attention's vector kernels). Gemma:
    local layers' windows (6 of the 71 slots), soft-caps, and the norms on the branch outputs, which
    every thread computes whole and adds its share of."""
    if native.library() is None:
        pytest.skip(f"no compiled decode step here: {native.reason()}")
    if source == "stories":
        if not STORIES.is_dir():
            pytest.skip("../shared/models/stories260K is absent")
        folder = STORIES
    elif source == "gpt2":
        folder = make_model(tmp_path, "gpt2")
    elif source == "q8_0":
        folder = make_model(tmp_path, "llama", hidden_size=256, intermediate_size=512)
    elif source.startswith("gemma"):
        folder = make_model(tmp_path, source.split()[0])
    else:  # an FFN width whose thread shares end mid-vector
        folder = make_model(tmp_path, "llama", intermediate_size=100)
    quantized = source.endswith("q8_0")
    eng = Engine.load(folder, device="cpu", dtype="q8_0" if quantized else "float32")
    assert eng.model._native.dtype == (torch.float16 if quantized else torch.float32)
    one = step_logits(eng, 1)
    for threads in (2, 3):
        assert torch.equal(step_logits(eng, threads), one), f"{threads} threads differ from one"


def test_a_machine_that_stalls_now_and_then_ends_up_on_one_thread():
    """Busy in bursts: every fourth all-threads step stalls 75x, the others are fast, so retries
    sometimes win. The holds still grow (the backoff survives a won retry until 1024 quiet steps),
    so after the first few hundred steps nearly every step runs on one thread."""
    c = ThreadChoice(2)
    used, fulls = [], 0
    for _ in range(3000):
        n = c.threads()
        used.append(n)
        if n == 2:
            fulls += 1
            c.record(1, 0.3 if fulls % 4 == 0 else 0.004)
        else:
            c.record(1, 0.008)
    assert used[1000:].count(2) < 0.02 * 2000
    assert c.backoff == c.max_backoff


def test_a_neighbour_there_from_the_start_is_found_by_the_periodic_probe():
    """Busy from the first step: every all-thread step is slow (7.6 ms) but none slower than usual,
    and one thread is faster (5.4 ms). The 64th step's probe finds it; the retries lose."""
    c = ThreadChoice(2)
    used = run(c, 64 + 1 + 16 + 1 + 32, 0.0076, 0.0054)
    assert used == "2" * 64 + "1" + "1" * 16 + "2" + "1" * 32


def test_a_quiet_machine_pays_a_probe_at_step_64_then_one_in_512():
    c = ThreadChoice(2)
    used = run(c, 1100, 0.004, 0.007)
    assert [i for i, n in enumerate(used) if n == "1"] == [64, 512 + 1, 1024 + 2]
