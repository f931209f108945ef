"""A prepared model bound to the compiled decode step (csrc/decode.c, built by engine/native.py).

WeightBuffer holds the weights the step streams, in the order it reads them; NativeStep fills
decode.c's Model struct with pointers into them and calls tk_decode_step once per one-token step.
Apart from engine/native.py, which builds and loads the library and is needed by everything that
calls into it, while this is needed only by the packed models (engine/llama_packed.py, gemma_packed.py,
gpt2_packed.py).
"""

from __future__ import annotations

import ctypes
import time
from typing import TYPE_CHECKING, Any, Protocol

import torch

from . import native, threads
from .kv_cache import kv_dtype
from .packed import huge_empty

if TYPE_CHECKING:
    from .config import ModelConfig
    from .native import Library


class WeightBuffer:
    """One buffer for every weight the compiled step streams, filled in the order a step reads them
    (measured: 4 % faster steps than separate tensors, the head among them read from the
    checkpoint's file pages). Its pages only become memory as they are filled, so a model copied
    in layer by layer never holds much more than one copy of its weights."""

    def __init__(self, numel: int, dtype: torch.dtype) -> None:
        self.data = huge_empty(numel, dtype)  # streamed every step: in 2 MB pages where the OS has them
        self.used = 0

    def take(self, numel: int) -> torch.Tensor:
        """The next numel elements of the buffer (flat, unwritten), for a caller that writes a weight
        straight into its place: a copy made elsewhere first would be fresh memory touched twice."""
        dest = self.data[self.used : self.used + numel]
        self.used += numel
        return dest

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        """A copy of w in the next free part of the buffer."""
        return self.take(w.numel()).view(w.shape).copy_(w)

    def head(self, out: torch.Tensor, tok_emb: torch.nn.Embedding) -> tuple[torch.Tensor, torch.nn.Embedding]:
        """Copy the vocabulary head in; a tied head's lookups then read the copy, so the
        checkpoint's embedding pages can go back. Returns (head, embedding to use)."""
        from .packed import release_pages

        tied = out.data_ptr() == tok_emb.weight.data_ptr()
        head = self(out.detach())
        if tied:
            tok_emb = torch.nn.Embedding.from_pretrained(head, freeze=True)
        release_pages([out], only_file_mapped=True)
        return head, tok_emb


# decode.c's Model.kv_type for each KV cache dtype (its KV_F32, KV_BF16, KV_F16).
_KV_TYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
# ggml's type of float weights (decode.c's Model.ftype, quant.h's T_F32, T_F16, T_BF16).
FLOAT_TYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 30}


# The blocks' optional per-layer float32 vectors: biases, per-head norm gains, unfolded norm gains
# and LayerNorm shifts (quantized weights), the norms' gains on the branch outputs (Gemma).
_VECTORS = (
    "bqkv",
    "bo",
    "b13",
    "b2",
    "q_norm",
    "k_norm",
    "attn_norm",
    "ffn_norm",
    "attn_norm_bias",
    "ffn_norm_bias",
    "post_attn_norm",
    "post_ffn_norm",
)


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    """A small vector as the step reads it: float32, contiguous (a copy the caller keeps alive)."""
    return None if t is None else t.detach().float().contiguous()


def _pointers(tensors: list) -> Any:
    """A C array (void **) of the tensors' data pointers."""
    return ctypes.cast(
        (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors]), ctypes.POINTER(ctypes.c_void_p)
    )


class PackedModel(Protocol):
    """What NativeStep reads from a model by attribute (see NativeStep; the optional ones by getattr)."""

    cfg: ModelConfig
    layers: torch.nn.ModuleList
    output: torch.Tensor
    norm_weight: torch.Tensor


class NativeStep:
    """A prepared model's weights bound to tk_decode_step: one call per one-token decode step.

    The model (PackedLlama, PackedGemma or PackedGPT2) provides `cfg`, `output` (V, D), `norm_weight` (D,),
    optionally `norm_bias` and `inv_freq`, and `layers` whose blocks hold plain (out, in) weights
    `wqkv`, `wo`, `w13`, `w2` (all float32, all bfloat16 or all float16), optional biases `bqkv`, `bo`, `b13`,
    `b2` and optional per-head norm gains `q_norm`, `k_norm`; see csrc/decode.c for their layout. It owns every tensor the pointers point into.
    Gemma's (PackedGemma) adds `geglu`, `local_layers` (n_layers,) int32 flags with `inv_freq_local`, and
    blocks with `post_attn_norm`, `post_ffn_norm` gains; cfg gives the local window and the soft-cap.

    A quantized model (PackedLlama, PackedGemma or PackedGPT2 of QTensor weights) has `wtypes`
    (n_layers, 7) int32 (the ggml types of wq, wk, wv, wo, gate, up, down), `out_type`, `q_scale`
    (GPT-2: `layer_q_scale` (n_layers,), its scale by layer), and blocks whose weights are uint8
    tensors of rows of those types back to back, with norm gains `attn_norm`, `ffn_norm` (GPT-2's
    LayerNorms also their shifts `attn_norm_bias`, `ffn_norm_bias`).

    `dtype` is the KV cache's the engine makes for the model (kv_cache.kv_dtype): float16 for
    quantized weights, else the weights' own float32, bfloat16 or float16. A call reads any of the three
    (the type of the cache it is handed), as the torch path does: tests compare the caches' types.
    """

    def __init__(self, lib: Library, model: PackedModel, gpt2: bool = False) -> None:
        cfg = model.cfg
        self.lib, self.model, self.cfg = lib, model, cfg
        wtypes = getattr(model, "wtypes", None)  # quantized weights: their types
        assert isinstance(model, torch.nn.Module)  # PackedLlama, PackedGPT2
        self.dtype = kv_dtype(model)  # the KV cache's
        assert self.dtype in _KV_TYPES and (wtypes is not None or model.output.dtype == self.dtype), self.dtype
        float_dtype = torch.float32 if wtypes is not None else model.output.dtype  # float weights (parts)
        self.keep: list = []  # the float32 copies and pointer arrays the struct refers to
        arrays = self._layer_arrays(model.layers, torch.uint8 if wtypes is not None else float_dtype)
        assert model.output.is_contiguous()
        if wtypes is not None:
            wtypes = wtypes.to(torch.int32).contiguous()
            assert wtypes.shape == (cfg.n_layers, 7), wtypes.shape
            self.keep.append(wtypes)
        float_type = FLOAT_TYPES[float_dtype]
        names = ("norm", "norm_bias", "inv_freq", "local_inv_freq", "layer_q_scale")
        vectors = [
            _f32(getattr(model, name, None))
            for name in ("norm_weight", "norm_bias", "inv_freq", "inv_freq_local", "layer_q_scale")
        ]
        self.keep += [arrays, vectors]
        values = dict(
            n_layers=cfg.n_layers,
            dim=cfg.dim,
            n_heads=cfg.n_heads,
            n_kv_heads=cfg.n_kv_heads,
            head_dim=cfg.head_dim,
            ffn_dim=cfg.ffn_dim,
            vocab=cfg.vocab_size,
            window=cfg.sliding_window or 0,
            ftype=float_type,
            kv_type=_KV_TYPES[self.dtype],
            gpt2=int(gpt2),
            gelu_tanh=int(cfg.activation != "gelu"),
            eps=cfg.norm_eps,
            wtypes=None if wtypes is None else wtypes.data_ptr(),
            q_scale=getattr(model, "q_scale", 1.0),
            rope_mag=getattr(model, "rope_mag", 1.0),
            out_type=getattr(model, "out_type", float_type),
            out=model.output.data_ptr(),
            same_row=None,  # set in each call's copy, as kv_type is (KVCache.share_prompt)
            same_len=0,
            **self._gemma_fields(model),
            **arrays,
            **{name: None if v is None else v.data_ptr() for name, v in zip(names, vectors, strict=True)},
        )
        # Every field of the C struct is set by name: a field added in decode.c and not here fails now.
        missing = {field[0] for field in lib.Model._fields_} ^ set(values)
        assert not missing, f"decode.c's Model and NativeStep disagree on {sorted(missing)}"
        self.struct = lib.Model(**values)
        self.threads: threads.ThreadChoice | None = None  # None: the process's (threads.CHOICE)

    def _gemma_fields(self, model: PackedModel) -> dict[str, Any]:
        """Gemma's fields (PackedGemma), which leave the others' steps as they were: its GeGLU, its
        attention soft-cap, and its local layers' flags ((n_layers,) int32, kept) and window."""
        cfg, local = model.cfg, getattr(model, "local_layers", None)
        assert local is None or (local.dtype == torch.int32 and local.shape == (cfg.n_layers,))
        self.keep.append(local)
        return dict(
            geglu=int(getattr(model, "geglu", False)),
            attn_softcap=cfg.attn_softcap or 0.0,
            local=None if local is None else local.data_ptr(),
            local_window=(cfg.local_window or 0) if local is not None else 0,
        )

    def _layer_arrays(self, layers: torch.nn.ModuleList, weight_dtype: torch.dtype) -> dict[str, Any]:
        """Per block tensor name, a C array of the layers' pointers to it (None where the blocks lack
        it): the weights as they are, the small vectors as float32 copies kept in self.keep."""
        arrays: dict[str, Any] = {}
        for name in ("wqkv", "wo", "w13", "w2"):
            ts = [getattr(layer, name) for layer in layers]
            for t in ts:
                assert t.is_contiguous() and t.dtype == weight_dtype, (name, t.dtype)
            arrays[name] = _pointers(ts)
        for name in _VECTORS:
            vs = [_f32(getattr(layer, name, None)) for layer in layers]
            arrays[name] = None if vs[0] is None else _pointers(vs)
            self.keep.append(vs)
        return arrays

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The step's vocabulary head for a prompt's last tokens: x (N, D) (normalised) -> logits
        (N, V) float32, through the step's own product (tk_matvec), which gives a row the same bits
        at any number of rows; oneDNN's rounds one row differently from several, and a prompt's
        first token would then depend on the prompts beside it."""
        x = x.to(torch.float32, memory_format=torch.contiguous_format)  # (N, D)
        n_threads = threads.now(self.threads or threads.CHOICE)
        return native.matvec(self.lib, self.model.output, self.struct.out_type, x, n_threads)  # (N, V)

    def __call__(
        self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None, cache, start: int
    ) -> torch.Tensor:
        """x (B, D): the new tokens' input vectors; positions (B, 1); mask (B, 1, 1, start + 1) bool or
        None; writes slot `start` of the KV cache -> logits (B, 1, V) float32."""
        B = x.shape[0]
        assert start + 1 <= cache.max_len, f"KV cache overflow: {start + 1} > {cache.max_len}"
        assert cache.kv.is_contiguous() and cache.kv.dtype in _KV_TYPES, cache.kv.dtype
        # The per-call fields go into a copy of the struct: the C call runs without the GIL, so two
        # threads generating on one model at once would otherwise hand the step each other's cache
        # type and shared-prompt row map (a segfault, or another batch's keys).
        struct = type(self.struct).from_buffer_copy(self.struct)
        struct.kv_type = _KV_TYPES[cache.kv.dtype]
        same = cache.same_row  # rows sharing a prompt's slots (KVCache.share_prompt)
        assert same is None or (same.dtype == torch.int32 and same.shape == (B,))
        struct.same_row = None if same is None else same.data_ptr()
        struct.same_len = 0 if same is None else min(cache.shared_len, start)
        x = x.to(torch.float32, memory_format=torch.contiguous_format, copy=True)  # the step overwrites it
        pos = positions.reshape(B)  # (B,)
        if pos.dtype != torch.int64 or not pos.is_contiguous():
            pos = pos.to(torch.int64).contiguous()
        logits = torch.empty(B, self.cfg.vocab_size)
        m = None if mask is None else mask.reshape(B, -1).to(torch.bool).contiguous()  # (B, start + 1)
        assert m is None or m.shape[1] == start + 1
        choice = self.threads or threads.CHOICE  # one thread while another program holds a core
        n_threads, t0 = threads.now(choice), time.perf_counter()
        rc = self.lib.tk_decode_step(
            ctypes.byref(struct),
            B,
            x.data_ptr(),
            pos.data_ptr(),
            cache.kv.data_ptr(),
            cache.max_len,
            start,
            None if m is None else m.data_ptr(),
            0 if m is None else m.shape[1],
            logits.data_ptr(),
            n_threads,
        )
        if rc != 0:
            raise MemoryError("the compiled decode step could not allocate its scratch memory")
        choice.record((id(self), B), time.perf_counter() - t0)
        return logits.unsqueeze(1)
