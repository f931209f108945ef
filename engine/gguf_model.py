"""GGUF files (llama.cpp, Ollama, LM Studio) as models: architectures, config and tensors.

The file is read with the `gguf` package (llama.cpp's own reader) once engine/gguf_header.py has
checked its header. What llama.cpp's converter (convert_hf_to_gguf.py) did to the Hugging Face
checkpoint is undone here, so the rest of the engine sees HF names, HF shapes and HF values, and
loads through the same code as a safetensors folder (engine/weights.py, the families' WEIGHT_MAPs):
  - names: one literal table per family, GGUF name -> HF checkpoint name;
  - shapes: GGUF lists dims ne0 first (in_features); numpy views are (out, in) already;
  - llama-arch q/k rows: permuted into llama.cpp's interleaved RoPE pairs (LlamaModel.permute);
    the inverse row order is applied here (rows, so it works on quantized rows too);
  - GPT-2's Conv1D weights: transposed to (out, in) by the converter, given back as (in, out);
  - Gemma's norm gains: stored as 1 + w, given back as w;
  - metadata: `{arch}.embedding_length` etc. -> the config.json a transformers model has, so
    ModelConfig.from_hf_config validates and maps it exactly as for a folder; RoPE divisor tensors
    (Llama 3's rope_freqs, Phi-3's rope_factors_*) become rope_scaling, and rope.scaling.attn_factor
    long-rope's attention_factor, as llama.cpp runs the file's value; what llama.cpp hardcodes
    instead of storing (Gemma's layer pattern and query scale) comes from one function per arch.
A split set (NAME-00001-of-0000N.gguf, ...: llama-gguf-split's parts) is one model, given by its
first part as llama.cpp takes it: the metadata is the first part's, the tensors are all parts'
(engine/gguf_split.py checks and maps each part).
Weights are dequantized to float one tensor at a time (gguf.quants.dequantize), or kept in their
blocks as quant.QTensors (keep_quantized) for the compiled decode step.
The architecture table is engine/gguf_arch.py; the reads of one tensor's data, engine/gguf_tensors.py.
"""

from __future__ import annotations

import json
import mmap
import re
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from .config import ModelConfig
from .errors import ModelLoadError
from .gguf_arch import ARCHS, Arch, arch_of
from .gguf_header import (
    FFN_DOWN,
    ROPE_DIVISORS,
    check_header,
    feed_forward_size,
    is_gguf,
    open_reader,
    peek,
    quantization_name,
)
from .gguf_split import open_parts
from .gguf_tensors import _hf_row_order, _never_read, _quant_types, _read, _read_blocks

if TYPE_CHECKING:
    import gguf
    import torch

    from .chat import ChatTemplate
    from .tokenizer import HFTokenizer, Tokenizer

__all__ = ["ARCHS", "Arch", "GGUFModel", "check_header", "is_gguf", "peek", "quantization_name"]


# Byte offsets of each block type's fp16 scale fields (engine/quant.py's table: d; q4_1/q5_1's m and
# the K-types' dmin at 2; q6_k's d after its 208 bytes of quants and sub-block scales).
SCALE_FIELDS: dict[str, tuple[int, ...]] = {
    "q8_0": (0,),
    "q4_0": (0,),
    "q4_1": (0, 2),
    "q5_0": (0,),
    "q5_1": (0, 2),
    "q4_k": (0, 2),
    "q5_k": (0, 2),
    "q6_k": (208,),
}


# config.json keys a GGUF file gives only as parts of other keys, and what errors call them instead,
# in order (after the architecture's key table, which names the keys it maps: so the first ones
# name rope_scaling's own keys, the later ones what is left)
_DERIVED_KEYS = (
    # Phi-3's long-rope divisors are tensors in a GGUF file
    (r"\brope_scaling: (short|long)_factor must be a list of\b", r"rope_factors_\1.weight must hold"),
    (r"\brope_scaling: factor\b", "{arch}.rope.scaling.factor"),
    (r"\brope_scaling: attention_factor\b", "{arch}.rope.scaling.attn_factor"),
    (r"\brope_scaling: original_max_position_embeddings\b", "{arch}.rope.scaling.original_context_length"),
    (r"\brope_scaling: (?={arch}\.)", ""),  # a key the table named already
    (r"\bpartial_rotary_factor\b", "{arch}.rope.dimension_count / the head size"),
    (r"\bunsupported rope scaling\b", "unsupported {arch}.rope.scaling.type"),
    (r"\brope_scaling\b", "{arch}.rope.scaling"),
    (r", or head_dim must be given\b", ""),  # left by the table only where the file has no key length (GPT-2)
)


def _again(path: Path) -> str:
    """How to get a damaged file again: an Ollama blob is pulled (by the name it was resolved from,
    where known), any other file downloaded."""
    from .model_names import given_name

    given = given_name(path)
    if given is not None:
        return f"run `ollama pull {given.removeprefix('ollama:').removesuffix(':latest')}` again"
    if path.name.startswith("sha256-") and path.parent.name == "blobs":
        return "pull the model again (`ollama pull NAME`)"
    return "download it again"


class GGUFModel:
    """A checked GGUF file (or split set, by its first part): its reader (the first part's), its
    config.json equivalent and its tensors in HF form."""

    def __init__(self, path: str | Path, keep_quantized: bool = False) -> None:
        """keep_quantized: hand the loader quant.QTensors (the file's blocks, rows in HF order) for
        the matrices in a block type engine/quant.py runs (q8_0, q4_0, q4_1, q4_k, q5_k, q6_k),
        instead of float tensors; 1-D tensors and other types are dequantized as always. Such a
        load is packed next (Engine.load), which copies every matrix into the compiled step's
        buffer: so the matrices it can are handed out as they lie in the file's mapping, not copied
        (blocks, and F32 ones, whose rows need no reordering), and the packing reads each once."""

        self.path, self.keep_quantized = Path(path), keep_quantized
        check_header(self.path, _again(self.path))
        try:
            self.reader = open_reader(self.path)
        except Exception as e:  # the header was walked already: anything left is a damaged file
            problem = f"{type(e).__name__}: {e}"[:200]
            raise ModelLoadError(
                f"{self.path} is not a usable GGUF file ({problem}); download it again or use another file"
            ) from None
        # A split set's parts (engine/gguf_split.py), each mapped by its own reader; the first holds
        # the metadata. One file: [(path, reader)].
        self.parts = open_parts(self.path, self.reader)
        self._part_of = {t.name: part for part in self.parts for t in part[1].tensors}  # tensor -> (path, reader)
        self.all_tensors = [t for _, reader in self.parts for t in reader.tensors]
        self.tensors = {t.name: t for t in self.all_tensors}
        self.arch_name = self.meta("general.architecture")
        self.arch = arch_of(self.path, self.arch_name)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def meta(self, key: str, default: Any = None) -> Any:
        """A metadata value as Python (str, int, float, bool, list), or default."""
        field = self.reader.fields.get(key)
        if field is None:
            return default
        try:
            return field.contents()
        except (UnicodeDecodeError, IndexError, ValueError):
            raise ModelLoadError(f"{self.path}: metadata {key} is damaged; download the file again") from None

    @cached_property
    def hf_config(self) -> dict[str, Any]:
        """The config.json a transformers checkpoint of this model has (from_hf_config validates it)."""
        a, p = self.arch, self.arch_name
        # torch_dtype: what `tiankong info` shows as the checkpoint's type (Q4_K_M, F16, ...)
        kind = quantization_name(self.meta("general.file_type")) or "GGUF"
        cfg: dict[str, Any] = {"architectures": [a.hf_architecture], "torch_dtype": kind}
        for key, hf_key in a.keys.items():
            value = self.meta(f"{p}.{key}")
            if value is not None:
                cfg[hf_key] = value
        # Sizes the tensors fix for certain (GPT-2's converter writes feed_forward_length 4 * n_embd).
        emb = self.tensors.get("token_embd.weight")
        if emb is None:
            raise ModelLoadError(f"{self.path} has no token_embd.weight; it is not a complete model")
        cfg["vocab_size"] = int(emb.shape[1]) if len(emb.shape) == 2 else 0
        self._feed_forward_size(cfg)
        cfg["tie_word_embeddings"] = "output.weight" not in self.tensors
        cfg.update(self._rope_scaling(cfg))
        if "rope_freqs.weight" in self.tensors:
            cfg["rope_scaling"] = self._llama3_scaling(cfg)
        if "rope_factors_long.weight" in self.tensors:  # Phi-3's long-rope: one divisor per pair
            cfg["rope_scaling"] = dict(
                rope_type="longrope",
                **{f"{k}_factor": self._floats(f"rope_factors_{k}.weight") for k in ("long", "short")},
            )
        self._attn_factor(cfg)
        if a.facts is not None:
            cfg.update(a.facts(cfg))
        for name, token in (("bos_token_id", "bos"), ("eos_token_id", "eos")):
            value = self.meta(f"tokenizer.ggml.{token}_token_id")
            if isinstance(value, int):
                cfg[name] = value
        return cfg

    def _feed_forward_size(self, cfg: dict[str, Any]) -> None:
        """The feed-forward size from blk.0.ffn_down.weight; a file whose feed_forward_length
        disagrees is refused (gguf_header.feed_forward_size: the rule, GPT-2 exempt)."""
        down = self.tensors.get(FFN_DOWN)
        dims = [int(d) for d in down.shape] if down is not None else None
        said = self.meta(f"{self.arch_name}.feed_forward_length")
        size = feed_forward_size(self.path, self.arch_name, said, dims)
        if size is not None:
            cfg["n_inner" if self.arch_name == "gpt2" else "intermediate_size"] = size

    def _floats(self, name: str) -> list[float]:
        """A small F32 vector tensor as a list (RoPE factors); one line if it is not one."""
        t = self.tensors.get(name)
        if t is None or t.tensor_type != 0 or len(t.shape) != 1 or int(t.shape[0]) > 1 << 14:
            raise ModelLoadError(f"{self.path}: {name} is missing or not a short F32 vector; download the file again")
        return np.asarray(t.data, dtype=np.float32).tolist()

    def _attn_factor(self, cfg: dict[str, Any]) -> None:
        """{arch}.rope.scaling.attn_factor, llama.cpp's scale on RoPE's cos and sin (so on each of q and
        k), which llama.cpp applies as the file gives it. Its converter writes one for Phi-3's long-rope,
        computed from the context lengths as transformers computes attention_factor where config.json
        gives none (a config.json's own attention_factor it drops); another converter or an edited
        file may hold any value, and llama.cpp runs that. So the file's value is long-rope's
        attention_factor here, checked as config.json's is. tiankong has no such scale elsewhere: a
        value other than 1 without long-rope is refused, not dropped."""
        key = f"{self.arch_name}.rope.scaling.attn_factor"
        value = self.meta(key)
        if value is None:
            return
        scaling = cfg.get("rope_scaling")
        if isinstance(scaling, dict) and scaling.get("rope_type") == "longrope":
            scaling["attention_factor"] = value
        elif value != 1:
            from .config_checks import _show

            raise ModelLoadError(
                f"{self.path}: {key} is {_show(value)}, a scale on RoPE that tiankong applies only with "
                "long-rope factors (rope_factors_long.weight); use the model's Hugging Face folder or another file"
            )

    def config(self) -> ModelConfig:
        """The ModelConfig, validated as a config.json is; errors name the file and its metadata keys
        (a file's values are no one's to fix by hand: the fix is another file)."""
        cfg = self.hf_config  # its own errors name the file already
        try:
            return ModelConfig.from_hf_config(cfg)
        except ModelLoadError as e:
            problem = str(e).removeprefix("config.json").lstrip(" :").rsplit("; ", 1)[0]
            for hf_key in sorted(set(self.arch.keys.values()), key=len, reverse=True):
                problem = re.sub(rf"\b{hf_key}\b", self.metadata_key(hf_key), problem)
            arch = str(self.arch_name)  # one of ARCHS' names: nothing a pattern or a replacement reads
            for derived, source in _DERIVED_KEYS:  # config.json keys made from the file's, named by those
                problem = re.sub(derived.replace("{arch}", arch), source.replace("{arch}", arch), problem)
            raise ModelLoadError(
                f"{self.path}: its metadata does not describe a model tiankong can build ({problem}); "
                "the file is damaged or was converted wrongly: use another file"
            ) from None

    def metadata_key(self, hf_key: str) -> str:
        """The GGUF metadata key for a config.json key (num_hidden_layers -> llama.block_count); the
        key itself where the file has none (a value llama.cpp hardcodes, or one read from tensors)."""
        gguf_key = next((k for k, v in self.arch.keys.items() if v == hf_key), None)
        return f"{self.arch_name}.{gguf_key}" if gguf_key else hf_key

    def file_tensor_name(self, hf_name: str) -> str:
        """The file's own name (blk.0.attn_k.weight) for a tensor's Hugging Face name, so errors name
        what gguf-dump shows; the name itself if no table entry makes it."""
        from .weight_names import NameTable

        return NameTable(self.arch.tensors).checkpoint_name(hf_name)

    def stored_type(self, hf_name: str) -> str | None:
        """The GGML type (F32, F16, Q4_K, ...) the file stores a tensor in, by its Hugging Face name;
        None for a name it does not hold."""
        t = self.tensors.get(self.file_tensor_name(hf_name))
        return None if t is None else t.tensor_type.name

    def _rope_scaling(self, cfg: dict[str, Any]) -> dict[str, Any]:
        kind = self.meta(f"{self.arch_name}.rope.scaling.type")
        factor = self.meta(f"{self.arch_name}.rope.scaling.factor")
        if kind in (None, "none") or kind == "linear" and factor in (None, 1.0):
            return {}
        scaling: dict[str, Any] = {"rope_type": kind, "factor": factor}
        orig = self.meta(f"{self.arch_name}.rope.scaling.original_context_length")
        if orig is not None:
            scaling["original_max_position_embeddings"] = orig
        return {"rope_scaling": scaling}  # from_hf_config names what it cannot run (yarn, ...)

    def _llama3_scaling(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """transformers' llama3 rope_scaling from the per-frequency divisors llama.cpp's converter
        stored in rope_freqs.weight (1 for high frequencies, `factor` for low ones, a blend between).

        In the blend, 1/f = (1 - s)/factor + s with s = orig/wavelength - low, over (high - low): a line
        in 1/wavelength whose slope and intercept give low and high once orig (the original context,
        8192 unless the file says) is fixed. The factors recomputed from the result must match.
        """
        import torch

        from .config import ModelConfig
        from .rope import rope_inv_freq

        t = self.tensors["rope_freqs.weight"]
        found = np.asarray(t.data, dtype=np.float64).reshape(-1) if t.tensor_type == 0 else np.zeros(0)
        orig = self.meta(f"{self.arch_name}.rope.scaling.original_context_length") or 8192
        theta, heads = float(cfg.get("rope_theta", 10000.0)), cfg.get("num_attention_heads")
        head_dim = cfg.get("head_dim") or (
            cfg.get("hidden_size", 0) // heads if isinstance(heads, int) and heads else 0
        )
        scaling: dict[str, Any] | None = None
        if found.size and found.size * 2 == head_dim and np.isfinite(found).all() and found.min() >= 1:
            factor = float(found.max())
            wavelength = 2 * np.pi * theta ** (np.arange(0, head_dim, 2) / head_dim)
            blend = (found > 1 + 1e-6) & (found < factor - 1e-6)
            if factor > 1 and blend.sum() >= 2:
                s = (1 / found[blend] - 1 / factor) / (1 - 1 / factor)  # s = a / wavelength - b
                a, b = np.polyfit(1 / wavelength[blend], s, 1)
                low, high = -b * orig / a, -b * orig / a + orig / a
                scaling = dict(
                    rope_type="llama3",
                    factor=round(factor, 4),
                    low_freq_factor=round(float(low), 4),  # 1.0, not 0.99998: the check below is exact
                    high_freq_factor=round(float(high), 4),
                    original_max_position_embeddings=int(orig),
                )
        if scaling is not None:  # the recovered settings must give back the file's divisors
            base = ModelConfig(head_dim=head_dim, rope_theta=theta, n_heads=1, n_kv_heads=1)
            plain = rope_inv_freq(base).double()
            base.rope_scaling = scaling
            again = plain / rope_inv_freq(base).double()
            if not torch.allclose(again, torch.from_numpy(found), rtol=1e-4):
                scaling = None
        if scaling is None:
            raise ModelLoadError(
                f"{self.path}: rope_freqs.weight holds RoPE divisors that are not Llama 3's scaling; "
                "tiankong cannot run them yet, use the model's Hugging Face folder"
            )
        return scaling

    def tokenizer(self) -> HFTokenizer:
        """The tokenizer rebuilt from tokenizer.ggml.* (engine/gguf_tokenizer.py)."""
        from .gguf_tokenizer import tokenizer_from_gguf

        return tokenizer_from_gguf(self.reader, self.path)

    def chat_template(self, tokenizer: Tokenizer) -> ChatTemplate | None:
        """tokenizer.chat_template compiled for `tokenizer` (one that cannot be used loads as
        ChatTemplate.unusable, so raw mode still works), or None when the file has none."""
        from .chat import ChatTemplate
        from .gguf_tokenizer import chat_template_from_gguf

        source = chat_template_from_gguf(self.reader, self.path)
        if source is None:
            return None
        template = ChatTemplate.of_model(source, tokenizer, self.path)
        template.origin = f"the tokenizer.chat_template of {self.path}"  # named when rendering fails
        return template

    def tokenizer_files(self) -> dict[str, str]:
        """The tokenizer as a Hugging Face folder holds it, for saving this model as one (trainers):
        tokenizer.json (the rebuilt pipeline, BOS rule included), tokenizer_config.json (special
        tokens and the chat template) and generation_config.json (every end-of-generation id)."""
        from .gguf_tokenizer import chat_template_from_gguf

        tok = self.tokenizer()
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": False,
            **tok.named_special_tokens,
        }
        template = chat_template_from_gguf(self.reader, self.path)
        if template is not None:
            config["chat_template"] = template
        generation = {"bos_token_id": tok.bos_id, "eos_token_id": sorted(tok.eos_ids)}
        return {
            "tokenizer.json": tok.to_json(),
            "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n",
            "generation_config.json": json.dumps(generation, indent=2) + "\n",
        }

    def tensor_types(self) -> dict[str, int]:
        """GGML type name -> how many tensors have it (e.g. {"Q4_K": 130, "F32": 61})."""
        out: dict[str, int] = {}
        for t in self.all_tensors:
            out[t.tensor_type.name] = out.get(t.tensor_type.name, 0) + 1
        return out

    def nonfinite_scales(self) -> tuple[str, str] | None:
        """(tensor name, "NaN" or "infinite") of the first block-quantized tensor, in file order, with
        a scale field (quant.py's d, m, dmin) that is not finite; None if every scale is finite. Reads
        the scale fields only (2 bytes of each 18-34 byte block): for a model whose logits went
        non-finite (generate.nonfinite_reason), where the kept blocks are bytes it cannot check."""
        sizes = _quant_types()
        for t in self.all_tensors:
            kind = t.tensor_type.name.lower()
            if kind not in SCALE_FIELDS or kind not in sizes:
                continue
            blocks = np.asarray(t.data).reshape(-1, sizes[kind][1])  # (blocks, bytes per block) uint8
            for at in SCALE_FIELDS[kind]:
                scales = np.ascontiguousarray(blocks[:, at : at + 2]).view("<f2")  # (blocks, 1)
                if not np.isfinite(scales).all():
                    return t.name, "NaN" if np.isnan(scales).any() else "infinite"
        return None

    def hf_tensors(self) -> Iterator[tuple[str, str, tuple[int, ...], Callable[[], torch.Tensor]]]:
        """(file name, HF name, HF shape, read) for every tensor; read() dequantizes to float32 on CPU.

        Names the table does not know keep their GGUF name, so the loader reports them as unexpected.
        """
        for t, hf_name, shape, transpose in self._entries():
            file = self._part_of[t.name][0].name  # the part that holds it, in a split set
            if transpose is None:
                yield file, hf_name, shape, _never_read  # the loader names it as unexpected
                continue
            yield file, hf_name, shape, self._reader(t, hf_name, shape, transpose)

    def block_types(self) -> dict[str, str]:
        """HF name -> quant type of every tensor whose read() gives a QTensor (keep_quantized), from
        the tensor infos alone (`tiankong info`: the model Engine.load builds, nothing read)."""
        return {
            hf_name: qtype
            for t, hf_name, shape, transpose in self._entries()
            if transpose is not None and (qtype := self.kept_type(t, shape))
        }

    def _entries(self) -> Iterator[tuple[gguf.ReaderTensor, str, tuple[int, ...], bool | None]]:
        """(tensor, HF name, HF shape, transpose?) for every tensor but the RoPE divisors; transpose
        None for a name no table entry maps (then the name is the file's own)."""
        from .weight_names import NameTable

        table = NameTable(self.arch.tensors, transposed=self.arch.transposed)
        for t in self.all_tensors:
            if t.name in ROPE_DIVISORS:
                continue  # RoPE divisors (Llama 3, Phi-3): read into the config's rope_scaling
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # (out, in) for a matrix
            hit = table.target(t.name)
            if hit is None:
                yield t, t.name, shape, None
                continue
            hf_name, transpose = hit
            yield t, hf_name, shape[::-1] if transpose else shape, transpose

    def _reader(self, t: gguf.ReaderTensor, hf_name: str, shape: tuple[int, ...], transpose: bool) -> Callable:
        """read() for one tensor: its blocks as a QTensor (keep_quantized), or floats with the
        converter's changes undone (q/k row order, Conv1D transpose, Gemma's + 1 on norm gains)."""
        rows = self._row_order(hf_name, shape)
        read: Callable[[], Any]
        if self.arch.norm_shift and hf_name.endswith("norm.weight"):
            read = lambda: _read(t, rows, transpose) - self.arch.norm_shift  # noqa: E731
        elif self.kept_type(t, shape):
            # A Conv1D weight (GPT-2) is (in, out) in HF form; its file rows are nn.Linear's (out, in),
            # which a QTensor keeps (the loader transposes only floats).
            kept = (shape[1], shape[0]) if transpose else shape
            read = lambda: _read_blocks(t, rows, kept)  # noqa: E731
        else:  # a matrix packed next can stay in the mapping (see __init__)
            read = lambda: _read(t, rows, transpose, copy=not (self.keep_quantized and len(shape) == 2))  # noqa: E731

        def read_and_release() -> Any:
            out = read()  # a copy's source pages go back; a view's are read (and let go) by the packing
            self._release(t)
            return out

        return read_and_release

    def kept_type(self, t: gguf.ReaderTensor, shape: tuple[int, ...]) -> str | None:
        """The quant.QTYPES name of a tensor read as a QTensor (keep_quantized: a matrix in a block
        type the engine runs; a transposed one, GPT-2's Conv1D, as its file rows), else None (read
        as floats)."""
        name = t.tensor_type.name.lower()
        keep = self.keep_quantized and len(shape) == 2 and name in _quant_types()
        return name if keep else None

    def _release(self, t: gguf.ReaderTensor) -> None:
        """Unmap the pages of a tensor already copied out (madvise DONTNEED; the page cache keeps
        them, and a later read maps them again). Without it every page read stays resident in the
        process beside the model made from it: an F32 file's load peaked at twice the weights."""
        buf = getattr(self._part_of[t.name][1].data, "_mmap", None)  # its part's numpy.memmap's mmap.mmap
        if buf is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = t.data_offset // mmap.PAGESIZE * mmap.PAGESIZE
        try:
            buf.madvise(mmap.MADV_DONTNEED, start, t.data_offset + t.n_bytes - start)
        except (OSError, ValueError):  # not where this platform allows it: only memory is at stake
            pass

    def _row_order(self, hf_name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The HF row order of a llama-arch q or k weight or bias (see _hf_row_order), else None."""
        kind = hf_name.rsplit(".", 2)[-2]
        if not self.arch.permuted_qk or kind not in ("q_proj", "k_proj"):
            return None
        heads = self.hf_config.get("num_attention_heads")
        if kind == "k_proj":
            heads = self.hf_config.get("num_key_value_heads") or heads
        if not isinstance(heads, int) or heads < 1 or shape[0] % (2 * heads):
            raise ModelLoadError(
                f"{self.path}: {hf_name} has {shape[0]} rows, not a whole number of heads of even size "
                f"for {heads} heads; the metadata does not match the weights"
            )
        return _hf_row_order(shape[0], heads)
