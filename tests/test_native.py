"""The compiled decode step (engine/csrc/decode.c) against transformers, and its fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import STORIES, make_model

from tiankong.engine import native, native_step
from tiankong.engine.engine import Engine
from tiankong.engine.kv_cache import KVCache, build_mask


def need_native() -> None:
    if native.library() is None:
        pytest.skip(f"no compiled decode step here: {native.reason()}")


# Five rows: one group of four plus a single row inside the kernel, different prompt lengths
# (left padding), and for Mistral a window that the decode steps run past. A 1100-wide FFN makes
# the down projection's rows of x too long for L1, so it goes through four weight rows at a time
# (tile4), and 3 threads give shares of rows that are not multiples of four.
@pytest.mark.parametrize(
    "arch,overrides,threads",
    [
        ("llama", {}, None),
        ("mistral", dict(sliding_window=8), None),
        ("qwen2", {}, None),
        ("qwen3", {}, None),  # per-head q/k norms, head_dim 24 (not hidden / heads), tied head
        ("qwen3", dict(attention_bias=True, tie_word_embeddings=False), None),  # q/k/v and o biases
        ("llama", dict(tie_word_embeddings=True), None),
        ("gpt2", {}, None),
        ("gpt2", dict(activation_function="gelu"), None),
        ("llama", dict(intermediate_size=1100), 3),
        # head_dim 64 and 128: attention's batched scores (16 slots at a time, then the rest) and
        # values summed in registers; one thread, so its share holds every slot (up to 22).
        ("llama", dict(head_dim=64), 1),
        ("mistral", dict(head_dim=128, sliding_window=18), 1),
        # the values are weighed for up to three query heads of a group at once at head_dim 64, two
        # at 128: groups of 8 (3 + 3 + 2), 1 and 3 (2 + 1)
        ("llama", dict(head_dim=64, num_attention_heads=8, num_key_value_heads=1), 1),
        ("llama", dict(head_dim=64, num_key_value_heads=4), 1),
        ("mistral", dict(head_dim=128, num_attention_heads=6, num_key_value_heads=2), 1),
        # Phi-3: fused weights split at load, RoPE over 12 of 16 head dims (zero frequencies past
        # them in the step); long-rope's short factors and attention factor (sequences stay below
        # original_max_position_embeddings: past it the long factors run on the torch path).
        ("phi3", dict(original_max_position_embeddings=64), None),
        ("phi3", dict(rope_parameters=None, partial_rotary_factor=1.0, sliding_window=8), None),
        # Gemma (tiny_models: local layers' window of 6, shorter than the rows; (1 + w) gains drawn
        # at random): Gemma 2's soft-caps on the scores and the logits, GeGLU, the norms on the
        # branch outputs; Gemma 3's q/k norms and local RoPE base; q/k/v and o biases with an untied
        # head; head_dim 64 (attention's vector kernels, groups of 3 + 1) and 256 (Gemma 3's own).
        ("gemma2", {}, None),
        ("gemma3", {}, None),
        ("gemma3", dict(attention_bias=True, tie_word_embeddings=False), None),
        ("gemma2", dict(head_dim=64, num_key_value_heads=1), 1),
        ("gemma3", dict(head_dim=256, num_key_value_heads=1), 1),
    ],
)
def test_native_decode_steps_equal_transformers(tmp_path, arch, overrides, threads):
    from transformers import AutoModelForCausalLM

    need_native()
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        check_decode_steps(AutoModelForCausalLM, make_model(tmp_path / "m", arch, **overrides))
    finally:
        torch.set_num_threads(before)


def check_decode_steps(AutoModelForCausalLM, folder) -> None:
    eng = Engine.load(folder, device="cpu", dtype="float32")
    assert eng.model.native and eng.decode_path.startswith("compiled step")
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    texts = ["Once upon a time", "The dog", "A little cat sat on the mat and looked", "Hi", "Tom and Sue went"]
    seqs = [eng.encode(t, raw=True) for t in texts]
    cfg, B, P, steps = eng.cfg, len(seqs), max(len(s) for s in seqs), 12
    tokens = torch.zeros(B, P, dtype=torch.long)
    for b, s in enumerate(seqs):
        tokens[b, P - len(s) :] = torch.tensor(s)
    pad = torch.tensor([P - len(s) for s in seqs])
    cache = KVCache(cfg.n_layers, B, cfg.n_kv_heads, P + steps, cfg.head_dim, torch.float32, "cpu")
    with torch.inference_mode():
        positions = (torch.arange(P)[None] - pad[:, None]).clamp(min=0)
        logits = eng.model(tokens, positions, build_mask(pad, 0, P, P, cfg.sliding_window), cache, 0, last_only=True)[
            :, -1
        ]
        for slot in range(P, P + steps):
            for b, s in enumerate(seqs):  # transformers recomputes each row's whole sequence, unpadded
                ref = hf(torch.tensor([s])).logits[0, -1]
                # Summation orders differ (16-wide partial sums here); measured up to 3.5e-5 after
                # ten steps, while a wrong mask, position or cache slot is off by ~1e-1.
                torch.testing.assert_close(logits[b], ref, atol=1e-4, rtol=1e-4, msg=f"row {b}, slot {slot}")
            chosen = logits.argmax(-1)
            for b, s in enumerate(seqs):
                s.append(int(chosen[b]))
            mask = build_mask(pad, slot, 1, slot + 1, cfg.sliding_window)
            logits = eng.model(chosen[:, None], (slot - pad)[:, None], mask, cache, slot)[:, -1]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gpt2", "gemma2", "gemma3"])
def test_native_bfloat16_decode_is_as_close_to_float32_as_transformers_bfloat16(tmp_path, arch):
    # bfloat16 weights and cache, float32 activations: the decode steps' logits must be no further
    # from the float32 truth than transformers' own bfloat16 run (which rounds activations too).
    from transformers import AutoModelForCausalLM

    need_native()
    from tiankong.engine.packed import can_pack

    if not can_pack(torch.device("cpu"), torch.bfloat16):
        pytest.skip("this CPU or torch build has no oneDNN bfloat16 (the prefill needs it)")
    folder = make_model(tmp_path / "m", arch)
    eng = Engine.load(folder, device="cpu", dtype="bfloat16")
    assert eng.model.native and eng.dtype == torch.bfloat16
    seq = eng.encode("Once upon a time there was a little dog who liked to run in the park", raw=True)
    P, cfg = 6, eng.cfg  # prefill the first 6 tokens, then feed the rest one step at a time
    cache = KVCache(cfg.n_layers, 1, cfg.n_kv_heads, len(seq), cfg.head_dim, torch.bfloat16, "cpu")
    ids = torch.tensor([seq])
    with torch.inference_mode():
        ours = [eng.model(ids[:, :P], torch.arange(P)[None], None, cache, 0, last_only=True)[0, -1].float()]
        for slot in range(P, len(seq) - 1):
            ours.append(eng.model(ids[:, slot : slot + 1], torch.tensor([[slot]]), None, cache, slot)[0, -1].float())
        ours = torch.stack(ours)  # logits at positions P-1 .. len-2
        ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()(ids).logits[0, P - 1 : -1]
        hf16 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
        hf16 = hf16(ids).logits[0, P - 1 : -1].float()
    ours_err, hf_err = (ours - ref).abs(), (hf16 - ref).abs()
    assert ours_err.mean() <= 1.5 * hf_err.mean(), (ours_err.mean(), hf_err.mean())
    assert ours_err.max() <= 1.5 * hf_err.max(), (ours_err.max(), hf_err.max())
    # and bfloat16 is not silently float32: the weights were rounded
    assert ours_err.max() > 1e-4


def test_more_threads_than_cache_slots(tmp_path):
    # 7 threads over a 3-token prompt: attention splits the slots between threads, so some get none
    # and must weigh nothing in the merge; results must not depend on the thread count.
    need_native()
    folder = make_model(tmp_path / "m", "llama")
    eng = Engine.load(folder, device="cpu", dtype="float32")
    cfg, ids = eng.cfg, torch.tensor([eng.encode("The dog", raw=True)[:3]])

    def steps(threads: int) -> torch.Tensor:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            cache = KVCache(cfg.n_layers, 1, cfg.n_kv_heads, 8, cfg.head_dim, torch.float32, "cpu")
            with torch.inference_mode():
                logits = eng.model(ids, torch.arange(3)[None], None, cache, 0, last_only=True)[:, -1]
                out = []
                for slot in range(3, 8):
                    logits = eng.model(logits.argmax(-1)[:, None], torch.tensor([[slot]]), None, cache, slot)[:, -1]
                    out.append(logits)
            return torch.cat(out)
        finally:
            torch.set_num_threads(before)

    torch.testing.assert_close(steps(7), steps(1), atol=1e-5, rtol=1e-5)


def test_native_sliding_window_without_a_mask(tmp_path):
    # One unpadded row and mask=None: the step itself must hide the keys that left the window.
    from transformers import AutoModelForCausalLM

    need_native()
    folder = make_model(tmp_path / "m", "mistral", sliding_window=4)
    eng = Engine.load(folder, device="cpu", dtype="float32")
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    seq = eng.encode("Once upon a time", raw=True)
    cfg, P = eng.cfg, len(seq)
    cache = KVCache(cfg.n_layers, 1, cfg.n_kv_heads, P + 8, cfg.head_dim, torch.float32, "cpu")
    with torch.inference_mode():
        logits = eng.model(torch.tensor([seq]), torch.arange(P)[None], None, cache, 0, last_only=True)[:, -1]
        for slot in range(P, P + 8):
            seq.append(int(logits.argmax()))
            logits = eng.model(torch.tensor([[seq[-1]]]), torch.tensor([[slot]]), None, cache, slot)[:, -1]
            ref = hf(torch.tensor([seq])).logits[0, -1]
            torch.testing.assert_close(logits[0], ref, atol=1e-4, rtol=1e-4, msg=f"slot {slot}")


@pytest.mark.skipif(not STORIES.is_dir(), reason="shared stories260K model folder is absent")
def test_native_and_onednn_paths_agree_on_the_real_checkpoint():
    # stories260K: head_dim 8, so every q.k is shorter than one vector (the kernels' scalar tails).
    need_native()
    folder = STORIES
    fast = Engine.load(folder, device="cpu", dtype="float32")
    from tiankong.engine.llama_packed import PackedLlama
    from tiankong.engine.model import load_model

    torch_only = PackedLlama(load_model(folder, "cpu", "float32")[0], native=False)
    assert fast.model.native and not torch_only.native
    cfg = fast.cfg
    ids = torch.tensor([fast.encode("Once upon a time", raw=True)])
    T = ids.shape[1]
    out = []
    for model in (fast.model, torch_only):
        cache = KVCache(cfg.n_layers, 1, cfg.n_kv_heads, T + 40, cfg.head_dim, torch.float32, "cpu")
        with torch.inference_mode():
            logits = model(ids, torch.arange(T)[None], None, cache, 0, last_only=True)[:, -1]
            steps = [logits]
            for slot in range(T, T + 40):
                nxt = logits.argmax(-1)[:, None]
                logits = model(nxt, torch.tensor([[slot]]), None, cache, slot)[:, -1]
                steps.append(logits)
        out.append(torch.cat(steps))
    # 5e-5: oneDNN's float32 products sum in another order on each CPU (on an Intel Xeon with AMX,
    # 40 greedy steps drifted 1.1e-5 apart, logits of scale ~10); a wrong kernel is off by far more.
    torch.testing.assert_close(out[0], out[1], atol=5e-5, rtol=1e-5)


def test_without_a_compiler_the_torch_path_runs(tmp_path):
    # A fresh process with no compiler on PATH and an empty cache: the engine says why and still
    # generates the same greedy text as with the compiled step.
    need_native()
    script = """
import sys
from tiankong.engine.engine import Engine
from tiankong.engine.sampling import SamplingParams
from tiankong.engine.events import TokenEvent
e = Engine.load(sys.argv[1], device="cpu", dtype="float32")
print(e.decode_path)
evs = e.generate([e.encode("The dog", raw=True)], [SamplingParams(temperature=0, max_new_tokens=16, seed=0)])
print([ev.id for ev in evs if isinstance(ev, TokenEvent)])
"""
    folder = make_model(tmp_path / "m", "llama")
    # Both at once, each with its own empty cache: the build takes seconds, the bare run as long.
    no_cc = {**os.environ, "PATH": str(tmp_path / "nothing"), "CC": "", "XDG_CACHE_HOME": str(tmp_path / "bare")}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for env in (no_cc, {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    ]
    (bare_out, bare_err), (built_out, built_err) = (p.communicate(timeout=300) for p in runs)
    assert runs[0].returncode == 0, bare_err
    path, ids = bare_out.strip().splitlines()
    assert path == (
        "torch, oneDNN-packed weights; compiled step unavailable: no C compiler found (set CC, or install gcc)"
    )
    assert not (tmp_path / "bare" / "tiankong").exists()
    assert runs[1].returncode == 0, built_err
    assert built_out.strip().splitlines() == ["compiled step (csrc/decode.c)", ids]
    # The build landed in the cache under one name, with no temporary file left beside it.
    assert [p.suffix for p in (tmp_path / "cache" / "tiankong" / "native").iterdir()] == [".so"]


def test_a_failing_build_is_reported_and_not_retried(tmp_path):
    # A compiler that fails: the engine says so, runs the torch path, and the next process reads
    # the failure from the cache instead of compiling again.
    need_native()
    fake = tmp_path / "fakecc"
    calls = tmp_path / "calls"
    fake.write_text(
        f'#!/bin/sh\n[ "$1" = --version ] && {{ echo fakecc 1.0; exit 0; }}\n'
        f"echo x >> {calls}\necho 'decode.c:1:1: error: boom' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    folder = make_model(tmp_path / "m", "llama")
    env = {**os.environ, "CC": str(fake), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    script = (
        "import sys\nfrom tiankong.engine.engine import Engine\n"
        "print(Engine.load(sys.argv[1], device='cpu', dtype='float32').decode_path)"
    )
    outs = [
        subprocess.run(
            [sys.executable, "-c", script, str(folder)], capture_output=True, text=True, env=env, timeout=300
        )
        for _ in range(2)
    ]
    assert [o.returncode for o in outs] == [0, 0], outs[0].stderr
    first, second = (o.stdout.strip() for o in outs)
    assert first == (
        "torch, oneDNN-packed weights; compiled step unavailable: compiling decode.c with fakecc "
        "failed: decode.c:1:1: error: boom"
    )
    assert second.startswith(first) and "(tried again in 60 min, or at once if you delete " in second
    assert calls.read_text() == "x\n"  # compiled once


def test_switched_off_by_environment(tmp_path):
    env = {**os.environ, "TIANKONG_NATIVE": "0"}
    folder = make_model(tmp_path / "m", "llama")
    out = subprocess.run(
        [sys.executable, "-m", "tiankong.tui.cli", "info", "--model", str(folder), "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["decode"] == (
        "torch, oneDNN-packed weights; compiled step unavailable: switched off by TIANKONG_NATIVE=0"
    )


def test_gemma_decodes_in_the_step_and_switched_off_in_torch_with_the_same_tokens(tmp_path):
    """A Gemma folder decodes through the compiled step (PackedGemma), and `tiankong info` (read from
    the header alone: model_facts) says so; TIANKONG_NATIVE=0 keeps the torch path it had (the plain
    module with oneDNN-packed linears), and greedy tokens past the local window are the same."""
    need_native()
    script = """
import sys
from tiankong.engine.engine import Engine
from tiankong.engine.model_facts import model_facts
from tiankong.engine.sampling import SamplingParams
from tiankong.engine.events import TokenEvent
e = Engine.load(sys.argv[1], device="cpu", dtype="float32")
print(type(e.model).__name__)
print(e.decode_path)
print(model_facts(sys.argv[1], device="cpu", dtype="float32")["decode"])
evs = e.generate([e.encode("The dog", raw=True)], [SamplingParams(temperature=0, max_new_tokens=16, seed=0)])
print([ev.id for ev in evs if isinstance(ev, TokenEvent)])
"""
    folder = make_model(tmp_path / "m", "gemma2")
    outs = [
        subprocess.run(
            [sys.executable, "-c", script, str(folder)],
            capture_output=True,
            text=True,
            env={**os.environ, "TIANKONG_NATIVE": off},
            timeout=300,
        )
        for off in ("1", "0")
    ]
    assert [o.returncode for o in outs] == [0, 0], [o.stderr for o in outs]
    (kind, path, facts, ids), (torch_kind, torch_path, torch_facts, torch_ids) = (o.stdout.splitlines() for o in outs)
    assert kind == "PackedGemma" and path == facts == "compiled step (csrc/decode.c)"
    off = "torch, oneDNN-packed weights; compiled step unavailable: switched off by TIANKONG_NATIVE=0"
    assert torch_kind == "Gemma" and torch_path == torch_facts == off
    assert ids == torch_ids and len(json.loads(ids)) == 16


def test_the_source_ships_with_the_package():
    # native.py compiles the C file from the installed package, so it must be package data.
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"tiankong.engine" = ["csrc/*.c", "csrc/*.h"]' in pyproject
    assert native.SOURCE.is_file() and all(h.is_file() for h in native.HEADERS)


def test_the_struct_is_described_once_and_the_binding_sets_every_field(tmp_path):
    """decode.c's MODEL_FIELDS declares `Model` and describes it (tk_model_layout); the ctypes mirror
    is built from that description, so the two cannot drift. What can still go wrong fails here."""
    lib = native.library()
    if lib is None:
        pytest.skip(f"no compiled step: {native.reason()}")
    layout = lib.tk_model_layout().decode()
    names = [f.split()[0] for f in layout.split(";")[:-1]]
    assert [n for n, _ in lib.Model._fields_] == names and "inv_freq" in names
    for name, _, offset in (f.split() for f in layout.split(";")[:-1]):
        assert getattr(lib.Model, name).offset == int(offset)
    # A layout ctypes would place differently (a C compiler packing a field elsewhere) is refused.
    shifted = layout.replace("dim INT 4;", "dim INT 8;", 1)
    with pytest.raises(RuntimeError, match="does not map"):
        native.model_struct(shifted)
    # A field that C gained but the binding does not set: NativeStep must refuse to bind.
    grown = layout.replace("size ", "extra INT 999;size ", 1)
    fields = [(f.split()[0], native._KINDS[f.split()[1]]) for f in grown.split(";")[:-1]]
    eng = Engine.load(make_model(tmp_path, "llama"), device="cpu", dtype="float32")

    class Grown:
        Model = type("Model", (native.ctypes.Structure,), {"_fields_": fields})
        tk_decode_step = None

    with pytest.raises(AssertionError, match="extra"):
        native_step.NativeStep(Grown, eng.model)


# head_dim 64: attention's batched scores, where the rows sharing a copy are scored in one pass over
# its keys (score_keys), 2 rows x 8 query heads of one kv head = 16 queries, in passes of 12 and 4.
@pytest.mark.parametrize(
    "dtype,overrides",
    [
        ("float32", {}),
        ("q8_0", {}),
        ("float32", dict(head_dim=64, num_attention_heads=8, num_key_value_heads=1)),
    ],
)
def test_rows_sharing_a_prompt_read_one_copy_with_the_same_bits(tmp_path, monkeypatch, dtype, overrides):
    """Rows prefilled from one prompt (compare's presets side by side) hold the same keys and values
    in the prompt's slots, and the step reads the first such row's copy there for all of them
    (KVCache.share_prompt). Every token, log-prob and candidate must equal the run where each row
    reads its own copy: two prompts of two rows each (the second group's first row is row 1), rows
    ending at different lengths (the cache drops rows between steps), prompts longer than two
    16-slot attention ranges, and the prefetch that skips the shared slots."""
    need_native()
    from tiankong.engine.events import TokenEvent
    from tiankong.engine.sampling import SamplingParams

    eng = Engine.load(make_model(tmp_path / "m", "llama", **overrides), device="cpu", dtype=dtype)
    assert eng.decode_path.startswith("compiled step")
    cat = eng.encode("the cat sat on the mat and looked at the bird in the tree " * 2, raw=True)
    dog = eng.encode("a dog ran to the park to play with a red ball " * 3, raw=True)
    assert len(cat) > 32 and len(dog) > 32  # both fill whole ranges with their own slots
    prompts = [cat, dog, cat, dog]
    params = [SamplingParams(temperature=0.9, top_k=20, seed=s, max_new_tokens=n) for s, n in enumerate((12, 7, 9, 12))]

    def run() -> list:
        return [
            (ev.row, ev.id, ev.logprob, [(c.id, c.logprob, c.p_sample) for c in ev.candidates])
            for ev in eng.generate(prompts, params, top_logprobs=5)
            if isinstance(ev, TokenEvent)
        ]

    seen = []
    share = KVCache.share_prompt

    def spy(self, groups, length):
        share(self, groups, length)
        seen.append(None if self.same_row is None else (self.same_row.tolist(), self.shared_len))

    monkeypatch.setattr(KVCache, "share_prompt", spy)
    shared = run()
    assert seen[0] == ([0, 1, 0, 1], max(len(cat), len(dog)))  # prefilled: the groups' first rows 0, 1
    assert any(s is not None and len(s[0]) < 4 for s in seen[1:])  # still shared after a row left
    monkeypatch.setattr(KVCache, "share_prompt", lambda self, groups, length: None)  # each reads its own
    assert run() == shared


def _mapping(t: torch.Tensor) -> dict[str, str]:
    """The /proc/self/smaps fields (Rss, VmFlags, ...) of the mapping that holds t's memory."""
    ptr = t.data_ptr()
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            lo, hi = (int(x, 16) for x in head.split("-"))
            if lo <= ptr < hi:
                fields = {}
                for field in lines[i + 1 :]:
                    key, _, value = field.partition(":")
                    if " " in key or "-" in key:  # the next mapping's header
                        break
                    fields[key] = value.strip()
                return fields
    raise AssertionError(f"{ptr:#x} is in no mapping")


def _huge_page_advised(t: torch.Tensor) -> bool:
    """Whether t's memory lies in a mapping advised for transparent huge pages (VmFlags "hg"): what
    the process asked for, whether or not the kernel had a free huge page at the time."""
    return "hg" in _mapping(t)["VmFlags"].split()


def _transparent_huge_pages() -> bool:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return sys.platform.startswith("linux") and path.is_file() and "[never]" not in path.read_text()


@pytest.mark.skipif(not _transparent_huge_pages(), reason="no transparent huge pages here")
@pytest.mark.parametrize("dtype", ["float32", "q8_0"])
def test_streamed_weights_and_the_cache_ask_for_huge_pages(tmp_path, dtype):
    """A decode step streams every weight (and, deep in a chat, the whole KV cache) once: in 4 KB
    pages that is a TLB miss every 4 KB, and one 135M row took 5-14 % longer (bench/hugepages.py).
    The weights the compiled step reads, the head among them, and the cache (also after rows leave
    it) must lie in memory advised for huge pages."""
    need_native()
    from tiankong.engine.packed import huge_empty

    # 512 wide, 3 layers: every buffer is past one 2 MB page (smaller ones are not worth a mapping)
    folder = make_model(tmp_path / "m", "llama", hidden_size=512, intermediate_size=1536, num_hidden_layers=3)
    eng = Engine.load(folder, device="cpu", dtype=dtype)
    assert eng.decode_path.startswith("compiled step")
    blocks = list(eng.model.layers)
    for w in [eng.model.output] + [getattr(b, k) for b in blocks for k in ("wqkv", "wo", "w13", "w2")]:
        assert _huge_page_advised(w), (dtype, tuple(w.shape))
    cache = KVCache(3, 4, 8, 1024, 64, torch.float16, "cpu")
    assert _huge_page_advised(cache.kv) and not cache.kv.any()
    cache.select(torch.tensor([0, 2]))
    assert _huge_page_advised(cache.kv) and cache.kv.shape[1] == 2
    # Under a page: torch's own memory (a resizable storage; a mapping's is not), zeroed. Not asked
    # by its VmFlags: malloc's small blocks may share a mapping with anything (CI once saw "hg").
    small = huge_empty(1000, torch.float32, zeroed=True)
    assert small.untyped_storage().resizable() and not cache.kv.untyped_storage().resizable() and not small.any()


@pytest.mark.skipif(not _transparent_huge_pages(), reason="no transparent huge pages here")
def test_a_cache_reuses_the_pages_of_one_that_is_gone_and_never_of_one_in_use():
    """Every generate call (and every row leaving a batch) makes a new KV cache. A fresh huge-page
    mapping must be faulted in again, slowly on this VM (four presets' first token 53-91 ms against
    28-37 with torch's memory, which glibc reuses: bench/hugepages.py), and two threads faulting
    one fresh page stall. So
    the caches' buffers come from a pool (packed.HugePagePool): a new mapping is resident when handed
    out (a fresh mapping's Rss is 0 kB); a cache's pages go to the next cache once no tensor uses
    them, zeroed; and never while any tensor, even a view, still does."""
    from tiankong.engine.packed import HugePagePool

    pool = HugePagePool(keep=2)
    first = pool.zeros(6 << 20, torch.uint8)
    assert int(_mapping(first)["Rss"].split()[0]) * 1024 >= first.numel()  # faulted in already
    first.fill_(7)
    view, at = first[1000:2000], first.data_ptr()
    del first
    second = pool.zeros(6 << 20, torch.uint8)  # the view keeps the first buffer in use
    assert second.data_ptr() != at and not second.any()
    del view
    third = pool.zeros(5 << 20, torch.uint8)
    assert third.data_ptr() == at and not third.any()  # the first buffer's pages, zeroed
    assert pool.zeros(1 << 20, torch.uint8).data_ptr() not in (at, second.data_ptr())  # under 2 MB: torch's
    del second, third
    pool.zeros(20 << 20, torch.uint8)  # a new mapping; the two free ones are kept (keep=2)
    assert len(pool._mappings) == 3
    pool.drop_free()
    assert len(pool._mappings) == 0  # the 20 MB tensor above was dropped at once: all free

    # The same through KVCache, as generate makes them: the second cache gets the first's pages and
    # writes them without a page fault (a new mapping of these 59 MB: one per 2 MB page at least).
    def faults() -> int:  # the process's minor page faults so far (/proc/self/stat's minflt)
        return int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[7])

    cache = KVCache(30, 4, 6, 640, 64, torch.float16, "cpu")  # four 135M rows of 640 slots
    cache.kv.fill_(1)
    at = cache.kv.data_ptr()
    del cache
    before = faults()
    again = KVCache(30, 4, 6, 640, 64, torch.float16, "cpu")
    again.kv[:, :, :, 100].fill_(2)  # a decode step's writes, all over the buffer
    assert faults() - before < 16, faults() - before
    assert again.kv.data_ptr() == at and again.kv[:, :, :, :100].eq(0).all()


def test_a_float_row_in_a_batch_gets_the_bits_it_gets_alone():
    """Two to four rows of x against short weight rows (all of x fits in L1 beside one weight row)
    go through tile(), which keeps dot()'s two sums per row of x: each product is the one-row
    product bit for bit (with one sum per row every chain waited on the FMA's latency, and four
    rows of a float32 model streamed 3-14 % slower a step)."""
    need_native()
    lib = native.library()
    gen = torch.Generator().manual_seed(5)
    for n in (576, 600):  # 18 chunks of 32; and 18 plus a chunk of 16 and a tail of 8
        w, x = torch.randn(37, n, generator=gen), torch.randn(4, n, generator=gen)
        alone = torch.cat([native.matvec(lib, w, 0, x[b : b + 1]) for b in range(4)])
        for B in (2, 3, 4):
            assert torch.equal(native.matvec(lib, w, 0, x[:B]), alone[:B]), (n, B)


@pytest.mark.parametrize("dtype, ggml", [(torch.float32, 0), (torch.bfloat16, 30), (torch.float16, 1)])
@pytest.mark.parametrize("width", [2048, 3072, 5632, 2056, 1000])
def test_a_rows_product_is_the_same_bits_at_any_number_of_rows(dtype, ggml, width):
    """QA57: the float products of rows too long for four input rows to stay in L1 beside them
    (tile4) summed in one chain, where one input row sums in dot's two: a 768-wide GPT-2's
    log-probs moved by 1.9e-6 between --batch-size 1 and 4 (its feed-forward down projection, 3,072
    wide). README promises the same text at any batch size: each row's product is dot's, bit for bit.
    (The tiny models of test_batch_invariance never reach tile4.)"""
    lib = native.library()
    if lib is None:
        pytest.skip(f"no compiled decode step here: {native.reason()}")
    g = torch.Generator().manual_seed(width)
    w = (torch.randn(96, width, generator=g) * 0.02).to(dtype)
    x = torch.randn(4, width, generator=g)
    alone = torch.cat([native.matvec(lib, w, ggml, x[b : b + 1], 2) for b in range(4)])
    for rows in (2, 3, 4):
        together = native.matvec(lib, w, ggml, x[:rows], 2)
        assert torch.equal(together, alone[:rows]), (rows, (together - alone[:rows]).abs().max())
