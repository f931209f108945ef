"""`Engine`: a loaded model with its tokenizer and chat template, and the one generation API.

    eng = Engine.load("path/to/model")                 # config.json + safetensors + tokenizer
    ids = eng.encode(messages=[{"role": "user", "content": "Hi"}])
    for ev in eng.generate([ids], [SamplingParams(temperature=0.7, seed=1)], top_logprobs=5):
        ...                                            # TokenEvent per token, Finished per row

The CLI, the TUI and the trainers all go through this class. encode, fit and check_fits are
prompter.PromptEncoder's: `load_prompter` gives them without the weights, to check prompts first.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from .chat import ChatTemplate
from .config import ModelConfig
from .context import PromptCache
from .errors import InputError, quoted
from .events import Event
from .generate import generate
from .gguf_load import (  # noqa: F401 (load_note, COMPILED_STEP: the engine's public names too)
    COMPILED_STEP,
    QUANTIZED_TORCH,
    compiled_step_path,
    gguf_load_dtype,
    keeps_blocks,
    load_note,
)
from .gguf_model import GGUFModel, is_gguf
from .kv_cache import kv_dtype
from .llama_packed import PackedLlama
from .model import dtype_name, load_model, prepare_for_inference
from .model_list import human_bytes
from .native import reason as native_reason
from .packed import PackedLinear
from .params import draw_seed, with_seeds  # noqa: F401 (here too: the engine's public names)
from .prompter import (  # noqa: F401 (tokenizer_and_template: the engine's public name too)
    PromptEncoder,
    check_template_path,
    check_tokenizer,
    tokenizer_and_template,
)
from .quant import is_quantized, weight_summary
from .request_checks import TokenIds, check_count, check_flag, check_params, token_id_lists, token_ids
from .resolve import resolve_model
from .sampling import SamplingParams
from .tokenizer import Tokenizer


def _checkpoint_dtype(value: Any, folder: Path) -> Any:
    """config.json's torch_dtype as info shows it: a name torch does not have ("float128") is marked,
    since nothing reads it (loading takes each weight's own type: the weight types row). A GGUF file's
    value is its quantization (Q4_K_M), shown as it is."""
    if value is None or is_gguf(folder) or isinstance(getattr(torch, str(value), None), torch.dtype):
        return value
    return f"{quoted(value, 40)} (not a dtype torch knows; each weight's own type is used)"


_IMAGE_TEXT = "Gemma3ForConditionalGeneration"  # the one architecture whose text model alone loads


def _attention_rows(c: ModelConfig) -> dict[str, Any]:
    """Engine.info's rows for the attention and logit settings a config has apart from the usual,
    only where set (so that a GGUF file's can be seen to be read): Gemma's query_pre_attn_scalar
    where it is not head_dim (queries scale by its -1/2 power), and the soft-caps (Gemma 2's)."""
    rows: dict[str, Any] = {}
    if c.family == "gemma" and c.attn_scale is not None and not math.isclose(c.attn_scale, c.head_dim**-0.5):
        scalar = round(c.attn_scale**-2, 6)  # attn_scale is scalar ** -0.5
        rows["query_pre_attn_scalar"] = int(scalar) if scalar.is_integer() else scalar
    if c.attn_softcap is not None:
        rows["attn_logit_softcapping"] = c.attn_softcap
    if c.final_softcap is not None:
        rows["final_logit_softcapping"] = c.final_softcap
    return rows


@dataclass
class Engine(PromptEncoder):
    model: nn.Module
    cfg: ModelConfig
    tokenizer: Tokenizer
    template: ChatTemplate | None
    folder: Path
    n_params: int = 0
    weights: dict = field(default_factory=dict)  # quant.weight_summary: types, bytes read per token
    _texts: dict[int, str] = field(default_factory=dict, init=False, repr=False)
    _longest_token: int = field(default=0, init=False, repr=False)  # characters; 0 = not measured yet

    @classmethod
    def load(
        cls,
        folder: str | Path | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = "auto",
        pack: bool = True,
        chat_template: str | Path | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> Engine:
        """Load a model folder, a GGUF file, or a name (engine/resolve.py: the Hugging Face cache,
        LM Studio, ollama:NAME); None (the default) loads the bundled model, tiankong-mini.
        Raises ModelLoadError with a one-line reason.

        device: "auto" (cuda, then mps, then cpu), "cpu", "cuda", "cuda:N" or "mps". dtype: "auto",
        float32, bfloat16, float16, or a quantized type (q8_0, q4_0, q4_1, q5_0, q5_1: the weights
        quantized at load); names in any case.

        pack: on CPU, rearrange the weights for inference (model.prepare_for_inference): the Llama
        family decodes through the compiled step where it builds (native.py), otherwise with
        oneDNN-packed weights; the model then runs forward only, in inference mode. False keeps the
        plain modules. chat_template: the path of a template file (Jinja, or JSON with "chat_template")
        used instead of the model's own; template text is refused, to be saved to a file. A GGUF file's
        quantized matrices stay quantized where the compiled step reads them (keeps_blocks), else they
        are dequantized to `dtype` at load. tokenizer: the model's tokenizer, loaded from this folder or
        file already (load_checked_tokenizer), which is then not loaded again: the playground loads it
        before its screen opens, so that one that is refused stops the command there.
        """
        pack = check_flag("pack", pack)
        check_tokenizer(tokenizer)
        check_template_path(chat_template)
        if chat_template is not None:  # read and compiled now, not after the weights
            ChatTemplate.check_file(chat_template)
        dtype = dtype_name(dtype)  # "Q8_0" as "q8_0" (keeps_blocks reads it too)
        folder = resolve_model(folder)
        # One reader for weights, tokenizer and template; blocks kept where the compiled step reads them.
        gguf = None
        if is_gguf(folder):
            keeps = keeps_blocks(folder, device, dtype, pack)
            gguf = GGUFModel(folder, keeps)
            dtype = gguf_load_dtype(folder, keeps, dtype)  # an F16 file's halves as they are, for the step
        model, cfg = load_model(gguf or folder, device, dtype)
        weights = weight_summary(model)  # before packing, which rearranges the weights
        n_params = weights["parameters"]
        if pack:
            model = prepare_for_inference(model)
        if gguf is not None:  # generate.nonfinite_reason reads its block scales, which the model keeps as bytes
            setattr(model, "gguf_file", gguf.path)  # noqa: B010 - a Path is no Module attribute mypy allows
        tokenizer, template = tokenizer_and_template(folder, gguf, cfg, chat_template, tokenizer)
        return cls(model, cfg, tokenizer, template, folder, n_params, weights)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in (its float weights and activations). Quantized weights
        (dtype="q8_0", a GGUF file's blocks) are float32 here: their types are `quantized`."""
        return next(self.model.parameters()).dtype

    @property
    def quantized(self) -> list[str]:
        """The quantized types of the weights (["q8_0"], ["q4_k", "q6_k"]); [] for float weights."""
        floats = {"float64", "float32", "bfloat16", "float16"}
        return sorted(k for k in self.weights.get("types", {}) if k not in floats)

    def decode(self, ids: TokenIds, skip_special_tokens: bool = False) -> str:
        """Token ids (a list, or a 1-D array or tensor) -> their text, as the tokenizer decodes them:
        e.g. a Finished's token_ids, or encode's ids. skip_special_tokens leaves out the tokenizer's
        special tokens (BOS, EOS)."""
        ids = token_ids(ids, self.cfg.vocab_size, "decode's ids")  # named as decode's argument, not prompts[0]
        return self.tokenizer.decode(ids, skip_special_tokens=check_flag("skip_special_tokens", skip_special_tokens))

    def generate(
        self,
        prompts: Sequence[TokenIds],
        params: Sequence[SamplingParams],
        *,
        top_logprobs: int = 0,
        cancel: threading.Event | None = None,
        prompt_cache: PromptCache | None = None,
    ) -> Iterator[Event]:
        """Stream TokenEvents and one Finished per row.

        prompts: one list of token ids per row, from `encode` (a numpy array or a torch tensor of
        ids is taken as the list it holds). params: one SamplingParams per prompt. A row without a
        seed gets a fresh one, reported as its Finished.seed: `params.replace(seed=fin.seed)` repeats
        the run. top_logprobs: candidates per TokenEvent. cancel: a threading.Event set from another
        thread ends every row after its current token ("cancelled"). prompt_cache: one row's
        conversation cache (context.PromptCache), kept across calls, used by one call at a time.

        Stop strings: TokenEvent.text is each token's text as it comes, so the streamed texts include
        a stop string (or its first tokens) that Finished.text then leaves out. To stream only what
        the answer keeps, pass each event's text through `engine.generate.HeldText(params.stop)`
        (`push`, then `finish(fin.text)`), as `tiankong serve` does.

        The arguments are checked by this call, not at the first next(): a wrong one raises
        InputError (a ValueError) naming it and the fix. Calls from several threads may run at once:
        each has its own KV cache, freed when its last Finished is yielded.
        """
        prompts = token_id_lists(prompts, self.cfg.vocab_size)
        params = check_params(params, len(prompts))
        return generate(
            self.model,
            self.cfg,
            self.tokenizer,
            prompts,
            with_seeds(params),
            top_logprobs=top_logprobs,
            cancel=cancel,
            text_of=self.token_text,
            prompt_cache=prompt_cache,
        )

    def token_text(self, id: int) -> str:
        """Readable text of one token (cached: candidate lists ask for the same ids again and again)."""
        if check_count("token id", id, 0) >= self.cfg.vocab_size:  # first: a list is no cache key, True no id
            raise InputError(f"token id {id} is not in the model's vocabulary of {self.cfg.vocab_size}")
        text = self._texts.get(id)
        if text is None:
            try:
                text = self.tokenizer.token_text(id)
            except IndexError:  # embedding rows padded past the tokenizer's vocabulary (e.g. Qwen2)
                text = f"<unused {id}>"
            self._texts[id] = text
        return text

    @property
    def decode_path(self) -> str:
        """How decode steps run: the compiled step, or torch (and why not compiled, when it was tried)."""
        if getattr(self.model, "native", False):
            return compiled_step_path(self.cfg)
        packed = any(isinstance(m, (PackedLlama, PackedLinear)) for m in self.model.modules())
        quantized = self.device.type == "cpu" and is_quantized(self.model)  # QLinear: dequantized every step
        path = "torch, oneDNN-packed weights" if packed else QUANTIZED_TORCH if quantized else "torch"
        why = native_reason()  # set when the step was wanted (a packed or quantized model) and did not build
        return f"{path}; compiled step unavailable: {why}" if why and (packed or quantized) else path

    def info(self) -> dict[str, Any]:
        """What the model is made of, for `tiankong info` and the TUI."""
        c = self.cfg
        kv = kv_dtype(self.model)
        kv_bytes = c.n_layers * 2 * c.n_kv_heads * c.head_dim * kv.itemsize
        return {
            "folder": str(self.folder),
            # Gemma 3 image-text checkpoints load their text model alone (config.text_prefix)
            "architecture": f"{_IMAGE_TEXT} (its text model; the vision tower is not loaded)"
            if c.text_prefix
            else c.architecture,
            "parameters": self.n_params,
            "layers": c.n_layers,
            "hidden_size": c.dim,
            "heads": c.n_heads,
            "kv_heads": c.n_kv_heads,
            "head_dim": c.head_dim,
            "ffn_size": c.ffn_dim,
            **_attention_rows(c),
            "positional_encoding": c.positional,
            "context_length": c.max_seq_len,
            "vocab_size": c.vocab_size,
            "tied_embeddings": c.tie_embeddings,
            "dtype": str(self.dtype).removeprefix("torch.")
            + (f" (quantized weights: {', '.join(self.quantized)})" if self.quantized else ""),
            # Matrices as loaded, Phi-3's fused tensors split: said, since a file's 10 read "x16"
            "weight_types": ", ".join(f"{k} x{v}" for k, v in sorted(self.weights.get("types", {}).items()))
            + (
                " (matrices: each fused q/k/v tensor counted as 3, gate/up as 2)"
                if c.architecture == "Phi3ForCausalLM"
                else ""
            ),
            "bytes_per_token": self.weights.get("bytes_per_token"),
            "kv_cache": f"{str(kv).removeprefix('torch.')}, {human_bytes(kv_bytes)} per token and row",
            "checkpoint_dtype": _checkpoint_dtype(c.torch_dtype, self.folder),
            "device": str(self.device),
            "decode": self.decode_path,
            # True, False, or why the model's own template cannot be used (ChatTemplate.unusable).
            "chat_template": f"broken: {self.template.broken}"
            if self.template and self.template.broken
            else self.template is not None,
            "bos_id": self.tokenizer.bos_id,
            "eos_ids": sorted(self.tokenizer.eos_ids),
        }
