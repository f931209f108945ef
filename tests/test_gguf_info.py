"""`tiankong info` reads headers only (engine/model_facts.py) and says what Engine.load would.

Each case compares model_facts with the facts of the model actually loaded (Engine.load(...).info()):
GGUF files whose blocks stay quantized (the compiled step), are dequantized (GPT-2, Gemma, Phi-3)
or are floats, and safetensors folders, as they load and quantized at load. The CLI's output is
pinned field by field on a small GGUF, with loading and reading any tensor made to fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gguf_files import write_gguf
from helpers import cli, one_thread  # noqa: F401 - one_thread applies to this module
from tiny_models import make_model

from tiankong.engine import gguf_model, native
from tiankong.engine.engine import Engine
from tiankong.engine.model_facts import model_facts
from tiankong.engine.model_list import human_bytes

FIELDS = [  # Engine.info()'s keys, in the order `tiankong info` prints them
    "folder",
    "architecture",
    "parameters",
    "layers",
    "hidden_size",
    "heads",
    "kv_heads",
    "head_dim",
    "ffn_size",
    "positional_encoding",
    "context_length",
    "vocab_size",
    "tied_embeddings",
    "dtype",
    "weight_types",
    "bytes_per_token",
    "kv_cache",
    "checkpoint_dtype",
    "device",
    "decode",
    "chat_template",
    "bos_id",
    "eos_ids",
]
# Rows Engine.info() adds after ffn_size only where a model sets them (Gemma's)
SET_ROWS = ("query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping")


def keys(facts: dict) -> list[str]:
    """facts' keys less the rows only some models have: FIELDS, in order."""
    return [k for k in facts if k not in SET_ROWS]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    rows = {"qwen2": dict(vocab_size=400)}  # embedding rows past the vocabulary, as Qwen's have
    out = {arch: make_model(tmp_path_factory.mktemp(arch), arch, **rows.get(arch, {})) for arch in ("qwen2", "gpt2")}
    out["llama"] = make_model(tmp_path_factory.mktemp("llama"), "llama", tie_word_embeddings=True)
    out["gemma3"] = make_model(tmp_path_factory.mktemp("gemma3"), "gemma3", sliding_window_pattern=6)
    out["phi3"] = make_model(tmp_path_factory.mktemp("phi3"), "phi3")
    out["gemma2"] = make_model(tmp_path_factory.mktemp("gemma2"), "gemma2")
    out["gemma3-vision"] = make_model(tmp_path_factory.mktemp("gemma3-vision"), "gemma3-vision")
    return out


@pytest.fixture(scope="module")
def gguf_file(folders, tmp_path_factory):
    def get(arch: str, qtype: str) -> Path:
        path = tmp_path_factory.getbasetemp() / f"{arch}-{qtype}.gguf"
        return path if path.exists() else write_gguf(folders[arch], path, qtype)

    return get


def loaded_facts(path: Path, dtype: str = "auto") -> dict:
    return Engine.load(path, device="cpu", dtype=dtype).info()


@pytest.mark.parametrize(
    "arch, qtype",
    [("llama", "q8_0"), ("llama", "f32"), ("qwen2", "q4_0"), ("qwen2", "f16"), ("gpt2", "q8_0"), ("gemma3", "q4_0")]
    + [("phi3", "q8_0"), ("gpt2", "f16")],  # (GPT-2's F16 file: float16 weights, its F32 position table kept)
)
def test_gguf_facts_are_the_loaded_models(gguf_file, arch, qtype):
    path = gguf_file(arch, qtype)
    facts = model_facts(path, device="cpu")
    assert keys(facts) == FIELDS and facts == loaded_facts(path)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "gemma3"])
@pytest.mark.parametrize("dtype", ["auto", "q8_0", "bfloat16"])
def test_folder_facts_are_the_loaded_models(folders, arch, dtype):
    """A safetensors folder: as it loads, quantized at load (--dtype q8_0), and cast."""
    facts = model_facts(folders[arch], device="cpu", dtype=dtype)
    assert keys(facts) == FIELDS and facts == loaded_facts(folders[arch], dtype)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3"])
def test_decode_path_without_the_compiled_step(folders, monkeypatch, arch):
    """Without the compiled step (TIANKONG_NATIVE=0, no compiler) the packed form differs, and so
    does what info says about it: the same as the loaded engine says."""
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_reason", "switched off by TIANKONG_NATIVE=0")
    facts = model_facts(folders[arch], device="cpu")
    assert facts == loaded_facts(folders[arch]) and "compiled step (" not in facts["decode"]


def test_info_cli_prints_the_loaded_facts_without_loading(gguf_file, monkeypatch, capsys):
    """`tiankong info` on a GGUF: every field the loaded engine has, same values, in the table and in
    JSON; while loading a model, packing one or reading any tensor's bytes raises."""
    from tiankong.engine import llama_packed, model

    path = gguf_file("llama", "q8_0")
    want = loaded_facts(path)
    if native.library() is not None:  # the file's blocks kept, for the compiled step: 2 layers x 7, the tied embedding
        assert want["weight_types"] == "q8_0 x15" and want["decode"] == "compiled step (csrc/decode.c)"

    def refuse(*args, **kwargs):
        raise AssertionError("info loaded the model")

    monkeypatch.setattr(Engine, "load", refuse)
    monkeypatch.setattr(model, "load_model", refuse)
    monkeypatch.setattr(model, "prepare_for_inference", refuse)
    monkeypatch.setattr(llama_packed.PackedLlama, "__init__", refuse)
    monkeypatch.setattr(gguf_model, "_read", refuse)
    monkeypatch.setattr(gguf_model, "_read_blocks", refuse)
    code, out, err = cli(monkeypatch, capsys, "info", "-m", path, "--format", "json")
    assert code == 0, err
    # led by the name `generate` says it loads, the path and the part count (QA: "folder" named a file)
    named = {"name": path.name, "path": want["folder"], "parts": 1}
    assert json.loads(out) == {**named, **want} and list(json.loads(out)) == [*named, *FIELDS]
    code, out, err = cli(monkeypatch, capsys, "info", "-m", path)
    assert code == 0, err
    rows = [line.split("│") for line in out.splitlines() if "│" in line]
    labels = ["name", "file"] + [k.replace("_", " ") for k in FIELDS if k != "folder"]  # one file: no parts row
    assert [r[0].strip() for r in rows if r[0].strip()] == labels
    rows = [r for r in rows if r[0].strip()]  # the path may fold onto rows of no label
    assert rows[0][1].strip() == path.name
    assert rows[labels.index("weight types")][1].strip() == want["weight_types"]
    per_token = rows[labels.index("bytes per token")][1].strip()
    assert per_token.startswith(human_bytes(want["bytes_per_token"]) + " of weights"), per_token


def test_info_reads_a_dtype_in_any_case(folders):
    """QA: `info --dtype Q8_0` said float32 (the load quantizes: generate read the name lower-cased)."""
    upper = model_facts(folders["llama"], "cpu", "Q8_0")
    assert upper == model_facts(folders["llama"], "cpu", "q8_0") and "quantized weights: q8_0" in upper["dtype"]


def test_a_quantized_file_quantized_again_is_said_and_kept_halves_are_not(gguf_file, monkeypatch, capsys):
    """QA: an F16 GGUF on the CPU became float32 in silence (twice the file in memory); --dtype q8_0 on
    a Q4_K_M file rounded its weights twice in silence (llama-quantize refuses it without
    --allow-requantize). Every architecture's halves now stay halves for the compiled step
    (test_native_f16.py: GPT-2's since PackedGPT2 reads them), so nothing is widened to say (without
    the step they are, and said: test_the_dequantize_note_gives_the_decode_rows_reason)."""
    from tiankong.engine.engine import load_note

    q8 = gguf_file("llama", "q8_0")
    again = load_note(q8, "cpu", "Q4_0")
    assert again is not None and "is Q8_0 already" in again and "leave out --dtype" in again
    if native.library() is not None:
        for path, dtype in (
            (gguf_file("llama", "f16"), "auto"),
            (gguf_file("gemma3", "f16"), "auto"),
            (gguf_file("gpt2", "f16"), "auto"),
            (gguf_file("gpt2", "f16"), "bfloat16"),
            (q8, "auto"),
            (gguf_file("llama", "f32"), "auto"),
        ):
            assert load_note(path, "cpu", dtype) is None, (path, dtype)
    code, _, err = cli(monkeypatch, capsys, "generate", "-m", q8, "--dtype", "q4_0", "-p", "hi", "-n", "1")
    lines = err.strip().splitlines()
    assert code == 0 and lines[0].startswith("loading ") and again in " ".join(err.split()), err


def test_a_quantized_file_keeps_its_blocks_in_silence(gguf_file, monkeypatch, capsys):
    """Every architecture's quantized blocks are kept for the compiled step: nothing to say. Gemma's
    stayed float32 in silence once (a Gemma 3 4B Q4_K_M of 2.5 GB took ~16 GB) and GPT-2's were
    dequantized to float32 with a note (several times the file); PackedGPT2 reads them now, and its
    F16 file's halves, which were widened to float32 (twice the file), also with a note."""
    from tiankong.engine.engine import load_note

    if native.library() is None:  # dequantized at load: test_the_dequantize_note_gives_the_decode_rows_reason
        return
    for arch, qtype in (("llama", "q8_0"), ("phi3", "q8_0"), ("gemma3", "q4_0"), ("gpt2", "q8_0")):
        path = gguf_file(arch, qtype)
        assert load_note(path, "cpu", "auto") is None, arch
        assert loaded_facts(path)["dtype"] == f"float32 (quantized weights: {qtype})", arch
    gpt2 = gguf_file("gpt2", "q8_0")
    code, _, err = cli(monkeypatch, capsys, "generate", "-m", gpt2, "-p", "hi", "-n", "1")
    assert code == 0 and "note:" not in err, err
    f16 = gguf_file("gpt2", "f16")
    assert load_note(f16, "cpu", "auto") is None and loaded_facts(f16)["dtype"] == "float16"


def file_figure(path: Path, size: int) -> str:
    """How a load note gives the weights at `size` bytes each: from info's parameter count and the
    file's size on disk."""
    n = model_facts(path, device="cpu", dtype="bfloat16")["parameters"] * size
    return f"about {human_bytes(n)} in memory, {n / path.stat().st_size:.1f}x the file"


@pytest.mark.parametrize(
    "reason, switched_off",
    [("switched off by TIANKONG_NATIVE=0", True), ("no C compiler found (set CC, or install gcc)", False)],
)
def test_the_dequantize_note_gives_the_decode_rows_reason(gguf_file, monkeypatch, capsys, reason, switched_off):
    """QA: under TIANKONG_NATIVE=0 a q8_0/Q4_K_M file's note said "no compiled step for this file"
    while info's decode row said "switched off by TIANKONG_NATIVE=0". The note gives the decode
    row's reason (no C compiler, ...), the figure, and for the switch its fix; F16 files too.
    GPT-2's blocks too, since PackedGPT2 keeps them."""
    from tiankong.engine.engine import load_note

    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_reason", reason)
    monkeypatch.setenv("TIANKONG_NATIVE", "0" if switched_off else "1")
    for arch, qtype in (("llama", "q8_0"), ("gemma3", "q4_0"), ("llama", "f16"), ("gpt2", "q8_0")):
        path = gguf_file(arch, qtype)
        decode = model_facts(path, device="cpu")["decode"]
        assert decode.endswith(f"; compiled step unavailable: {reason}"), decode
        note = load_note(path, "cpu", "auto")
        assert note is not None and f"on the CPU (compiled step unavailable: {reason}): " in note, note
        assert "no compiled step for" not in note and ("unset TIANKONG_NATIVE to keep the" in note) == switched_off
        if qtype != "f16":
            assert f"{file_figure(path, 4)}; " in note and note.endswith("--dtype bfloat16 holds them in half that")
    path = gguf_file("gemma3", "q4_0")
    code, _, err = cli(monkeypatch, capsys, "info", "-m", path, "--format", "json")
    assert code == 0 and load_note(path, "cpu", "auto") in " ".join(err.split()), err


def test_a_dtype_of_floats_on_a_quantized_file_is_said(gguf_file, monkeypatch, capsys):
    """QA: --dtype float32 (or bfloat16) on a Gemma 3 Q4_K_M file dequantized its blocks (4.3x the
    file) in silence, where README says generate, serve and info say it in a line. Said with the
    figure and the fix: leave out --dtype to keep the blocks (halves, for an F16 file; GPT-2's, which
    the step does not read, bfloat16); under TIANKONG_NATIVE=0, unset it too."""
    from tiankong.engine.engine import load_note

    if native.library() is not None:
        for arch, qtype, dtype in (("gemma3", "q4_0", "float32"), ("llama", "q8_0", "bfloat16")):
            path = gguf_file(arch, qtype)
            note = load_note(path, "cpu", dtype)
            want = f"note: --dtype {dtype} turns the file's {qtype.upper()} blocks into {dtype} at load: "
            want += file_figure(path, 4 if dtype == "float32" else 2)
            assert note is not None and note.startswith(want + "; leave out --dtype to keep the blocks"), note
            assert note.endswith("--dtype bfloat16 holds them in half that") == (dtype == "float32")
        f16 = load_note(gguf_file("gemma3", "f16"), "cpu", "float32")
        assert f16 is not None and "F16 weights into float32" in f16 and "leave out --dtype to keep the halves" in f16
        path = gguf_file("gemma3", "q4_0")
        code, _, err = cli(monkeypatch, capsys, "generate", "-m", path, "--dtype", "float32", "-p", "hi", "-n", "1")
        assert code == 0 and load_note(path, "cpu", "float32") in " ".join(err.split()), err
        for qtype, keep in (("f16", "halves"), ("q8_0", "blocks")):  # GPT-2's, which PackedGPT2 keeps
            gpt2 = load_note(gguf_file("gpt2", qtype), "cpu", "float32") or ""
            assert f"leave out --dtype to keep the {keep}" in gpt2 and gpt2.endswith("in half that"), gpt2
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_reason", "switched off by TIANKONG_NATIVE=0")
    monkeypatch.setenv("TIANKONG_NATIVE", "0")
    off = load_note(gguf_file("gemma3", "q4_0"), "cpu", "bfloat16")
    assert off is not None and off.endswith(
        "unset TIANKONG_NATIVE and leave out --dtype to keep the blocks "
        "(compiled step unavailable: switched off by TIANKONG_NATIVE=0)"
    ), off


def test_info_shows_soft_caps_and_a_query_scalar_where_set(folders, gguf_file, monkeypatch, capsys):
    """QA: info on Gemma 2 never showed its soft-caps or query_pre_attn_scalar, so whether a GGUF
    file's caps were read could not be seen. Rows where set, with config.json's values; a GGUF
    file's query scalar is head_dim's (llama.cpp's reading): no row. Other models: no rows."""
    hf = json.loads((folders["gemma2"] / "config.json").read_text())
    facts = model_facts(folders["gemma2"], device="cpu")
    want = {k: hf[k] for k in SET_ROWS}
    assert {k: facts[k] for k in SET_ROWS if k in facts} == want and want["query_pre_attn_scalar"] != hf["head_dim"]
    assert list(facts)[list(facts).index("ffn_size") + 1 :][:3] == list(SET_ROWS)
    from_file = model_facts(write_gguf(folders["gemma2"], folders["gemma2"].parent / "g2.gguf", "q8_0"), "cpu")
    assert {k: from_file[k] for k in SET_ROWS if k in from_file} == {k: want[k] for k in SET_ROWS[1:]}
    assert not set(SET_ROWS) & set(model_facts(gguf_file("llama", "q8_0"), device="cpu"))
    code, out, err = cli(monkeypatch, capsys, "info", "-m", folders["gemma2"])
    rows = {r[0].strip(): r[1].strip() for r in (line.split("│") for line in out.splitlines() if "│" in line)}
    assert code == 0 and rows["attn logit softcapping"] == "3.0" and rows["query pre attn scalar"] == "20", out


def test_info_names_an_image_text_checkpoint_as_such(folders):
    """QA: info on a Gemma3ForConditionalGeneration folder said Gemma3ForCausalLM: the text model it
    loads, without a word about the vision tower left out."""
    hf = json.loads((folders["gemma3-vision"] / "config.json").read_text())
    assert hf["architectures"] == ["Gemma3ForConditionalGeneration"]
    facts = model_facts(folders["gemma3-vision"], device="cpu")
    assert facts == loaded_facts(folders["gemma3-vision"])
    want = "Gemma3ForConditionalGeneration (its text model; the vision tower is not loaded)"
    assert (
        facts["architecture"] == want and model_facts(folders["gemma3"], "cpu")["architecture"] == "Gemma3ForCausalLM"
    )


def test_quantized_weights_on_the_torch_path_say_so_and_why(folders, monkeypatch):
    """QA57: TIANKONG_NATIVE=0 with --dtype q8_0 decoded ~10x slower than float32 on the same path
    (every quantized weight dequantized at each step) while info said only "torch"; the other torch
    rows give the reason. Engine and info say it alike, with why."""
    from tiankong.engine.engine import QUANTIZED_TORCH

    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_reason", "switched off by TIANKONG_NATIVE=0")
    monkeypatch.setenv("TIANKONG_NATIVE", "0")
    want = f"{QUANTIZED_TORCH}; compiled step unavailable: switched off by TIANKONG_NATIVE=0"
    for arch in ("gpt2", "qwen2"):
        assert Engine.load(folders[arch], device="cpu", dtype="q8_0").decode_path == want, arch
        assert model_facts(folders[arch], device="cpu", dtype="q8_0")["decode"] == want, arch


def test_a_quantized_files_parameters_count_its_layers_biases(gguf_file):
    """QA57: info counted a quantized GPT-2's parameters 9,216 short of its F32 file's and of
    transformers' (a QLinear's bias is a buffer, not a parameter); Qwen2's q/k/v biases alike."""
    for arch in ("gpt2", "qwen2"):
        want = model_facts(gguf_file(arch, "f32"), device="cpu")["parameters"]
        for qtype in ("q8_0", "q4_0"):
            assert model_facts(gguf_file(arch, qtype), device="cpu")["parameters"] == want, (arch, qtype)
            assert loaded_facts(gguf_file(arch, qtype))["parameters"] == want, (arch, qtype)


def test_f16_matrices_of_a_quantized_file_are_said_widened(folders, tmp_path, monkeypatch, capsys):
    """QA: llama-quantize keeps some matrices F16 (and falls back to F16 for rows its type cannot
    split); the load widens them to float32 beside the kept blocks, which was said nowhere. generate
    and info say it, naming them and the memory; the mixed model's logits are transformers' on the
    same weights (each matrix's quantize -> dequantize round trip in its own type)."""
    import gguf
    import torch
    from gguf_files import dequantized_folder, hf_logits

    from tiankong.engine.engine import load_note
    from tiankong.engine.gguf_model import GGUFModel
    from tiankong.engine.model import load_model

    types = {"blk.0.ffn_down.weight": "f16", "blk.1.attn_v.weight": "f16"}
    path = write_gguf(folders["llama"], tmp_path / "mixed.gguf", "q8_0", types=types)
    note = load_note(path, "cpu", "auto")
    if native.library() is not None:  # else every block is dequantized, and the note says that
        n = sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors if t.name in types)
        assert note == (
            "note: the Q8_0 file holds 2 F16 matrices (blk.0.ffn_down.weight, blk.1.attn_v.weight), widened "
            "to float32 at load (the compiled step keeps only the blocks as they are): "
            f"{human_bytes(2 * n)} more in memory than in the file"
        )
        facts = loaded_facts(path)
        assert "float32 x2, q8_0 x" in facts["weight_types"] and facts == model_facts(path, device="cpu")
        code, _, err = cli(monkeypatch, capsys, "info", "-m", path, "--format", "json")
        assert code == 0 and note in " ".join(err.split()), err
    model, _ = load_model(GGUFModel(path, keep_quantized=True), device="cpu", dtype="float32")
    ids = [1, 5, 300, 17, 42, 99, 250, 7]
    with torch.no_grad():
        ours = model(torch.tensor([ids]), torch.arange(len(ids))[None])[0]
    ref = dequantized_folder(folders["llama"], tmp_path / "reference", "q8_0", types=types)
    torch.testing.assert_close(ours, hf_logits(ref, ids), atol=2e-5, rtol=1e-5)


def test_the_playground_says_the_load_note_generate_and_info_say(folders, tmp_path, monkeypatch, capsys, store):
    """QA58: `tiankong chat` of a Q8_0 file holding F16 matrices (widened to float32 at load) said
    nothing, where `info` and `generate` print the note: the app says info's line in a notification."""
    import asyncio

    from tiankong.tui.app import TiankongApp

    types = {"blk.0.ffn_down.weight": "f16", "blk.1.attn_v.weight": "f16"}
    path = write_gguf(folders["llama"], tmp_path / "mixed.gguf", "q8_0", types=types)
    code, _, err = cli(monkeypatch, capsys, "info", "-m", path, "--device", "cpu", "--format", "json")
    said = " ".join(err.split())
    assert code == 0 and "note: " in said, err

    async def go() -> list[tuple[str | None, str]]:
        app = TiankongApp(path, store=store, export_dir=tmp_path, show_timing=False, device="cpu")
        async with app.run_test(size=(100, 32)) as pilot:
            for _ in range(1500):  # 30 s at most
                if app.engine is not None or app.engine_error is not None:
                    break
                await pilot.pause(0.02)
            await pilot.pause(0.1)
            assert app.engine_error is None, app.engine_error
            return [(n.title, str(n.message)) for n in app._notifications]

    notes = [message for title, message in asyncio.run(go()) if title == "about this load"]
    assert len(notes) == 1 and f"note: {notes[0]}" in said, (notes, said)  # info's very line
    if native.library() is not None:  # else every block is dequantized, and the note says that
        held = "the Q8_0 file holds 2 F16 matrices (blk.0.ffn_down.weight, blk.1.attn_v.weight), widened"
        assert notes[0].startswith(held), notes
