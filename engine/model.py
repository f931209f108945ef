"""Build a model from a folder: config.json -> architecture -> weights on the chosen device."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from . import gemma, gpt2, llama
from .config import ModelConfig
from .errors import InputError, ModelLoadError, quoted
from .gemma_packed import PackedGemma
from .gguf_model import GGUFModel, is_gguf
from .gpt2_packed import PackedGPT2
from .llama_packed import PackedLlama
from .native import library as native_library
from .packed import can_pack, pack_linears
from .quant import QUANTIZABLE, is_quantized, quantize_model
from .request_checks import check_flag
from .rope import rope_buffers
from .weight_names import NameTable
from .weights import check_checkpoint, load_weights

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}
DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit device that is absent is an error. Names
    are read in any case ("CPU", "Cuda:1")."""
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind, _, index = name.partition(":")
    if kind not in DEVICES or (kind == "auto" and index) or (index and not index.isdigit()):
        raise ModelLoadError(
            f"unknown device {quoted(device)!r}; choose one of {', '.join(DEVICES)} (cuda:N for one GPU)"
        )
    # The fix names the CLI flag and the Python argument: Engine.load and the CLI share these messages.
    if kind == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {name} requested but no CUDA GPU is visible; {_USE_CPU}")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise ModelLoadError(
            f"device {name} requested but only {torch.cuda.device_count()} CUDA GPU(s) are visible "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); choose one of them, or {_USE_CPU}"
        )
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelLoadError(f"device {name} requested but Metal is not available; {_USE_CPU}")
    return torch.device(name)


_USE_CPU = "use the CPU (--device cpu, or device='cpu' in Python)"


def dtype_name(dtype: str | torch.dtype | None) -> str | torch.dtype | None:
    """A dtype as load_model reads it: a name in lower case ("BFLOAT16", "Q8_0" are accepted)."""
    return dtype.strip().lower() if isinstance(dtype, str) else dtype


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto': float32 on CPU (fast and exact there), bfloat16 on GPUs that have it, else float16.
    A quantized type (q8_0, q4_0, q4_1, q5_0, q5_1) loads in float32, which load_model then quantizes.
    Names are read in any case."""
    dtype = dtype_name(dtype)
    if isinstance(dtype, torch.dtype):  # torch.bfloat16 as "bfloat16"; an integer or float8 type is refused below
        dtype = next((name for name, d in DTYPES.items() if d == dtype), str(dtype).removeprefix("torch."))
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if dtype in QUANTIZABLE:
        return torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(
            f"unknown dtype {dtype!r}; choose auto, float32, bfloat16, float16, {', '.join(QUANTIZABLE)}"
        )
    return DTYPES[dtype]


FAMILIES = {"llama": (llama, llama.Llama), "gemma": (gemma, gemma.Gemma), "gpt2": (gpt2, gpt2.GPT2)}


def family_module(cfg: ModelConfig):
    return FAMILIES[cfg.family][0]


def build_model(cfg: ModelConfig) -> nn.Module:
    """A model with freshly initialised weights (trainers start here; loading goes via meta)."""
    return FAMILIES[cfg.family][1](cfg)


def name_table(cfg: ModelConfig) -> NameTable:
    mod = family_module(cfg)
    return NameTable(
        mod.WEIGHT_MAP,
        getattr(mod, "IGNORED", ()),
        getattr(mod, "TRANSPOSED", frozenset()),
        getattr(mod, "PREFIX", ""),
        fused=llama.phi3_fused(cfg) if cfg.architecture == "Phi3ForCausalLM" else None,
        sub_model=cfg.text_prefix,
    )


def set_rope_buffers(model: nn.Module, cfg: ModelConfig, device: torch.device) -> nn.Module:
    """Recompute the RoPE frequencies in float32 on `device`: a model built on meta, or cast with
    its weights to bfloat16, has them wrong."""
    for name, freqs in rope_buffers(cfg).items():
        setattr(model, name, freqs.to(device))
    return model


def check_folder(folder: Path) -> Path:
    """`folder`, unless it is missing or a file (a GGUF file is not passed here): one line saying so."""
    if not folder.exists():
        raise ModelLoadError(
            f"model folder {folder} does not exist; pass a local model folder (--model DIR, or its path in Python)"
        )
    if not folder.is_dir():
        raise ModelLoadError(
            f"{folder} is a file, not a model folder; pass the folder that holds config.json, or a .gguf file"
        )
    return folder


def load_model(
    folder: str | Path | GGUFModel,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = "auto",
    *,
    trainable: bool = False,
) -> tuple[nn.Module, ModelConfig]:
    """Load a Hugging Face model folder or a GGUF file (dequantized to `dtype`); returns (model, its
    config). The model comes frozen, in eval mode (every parameter requires_grad=False), as inference
    and a trainer's reference model want it; trainable=True gives it ready to train: every parameter
    requiring grad, in training mode (the same as `model.requires_grad_(True).train()`)."""
    dtype, trainable = dtype_name(dtype), check_flag("trainable", trainable)
    if trainable and dtype in QUANTIZABLE:
        raise InputError(
            f"a model loaded as {dtype} cannot be trained (its weights are integer blocks); load float32 or bfloat16"
        )
    if not isinstance(folder, GGUFModel):
        folder = Path(folder).expanduser()
        folder = GGUFModel(folder) if is_gguf(folder) else check_folder(folder)
    cfg = ModelConfig.from_folder(folder) if isinstance(folder, Path) else folder.config()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    table = name_table(cfg)
    with torch.device("meta"):  # a one-layer model gives every tensor's expected shape, for nothing
        one_layer = build_model(replace(cfg, n_layers=1))
    check_checkpoint(folder, cfg, table, one_layer)
    with torch.device("meta"):
        model = build_model(cfg)
    load_weights(model, cfg, folder, table, dt, dev)
    if dtype in QUANTIZABLE:
        # Every linear weight and the embedding in that type; the head in q8_0, as llama.cpp keeps
        # the head at more bits than the layers (its q6_k, which only GGUF files bring).
        quantize_model(model, dtype, head_qtype="q8_0")
        if isinstance(folder, Path):  # a GGUF file's floats are copies already
            _own_floats(model)
    model = set_rope_buffers(model, cfg, dev)
    return (model.requires_grad_(True).train() if trainable else model.eval()), cfg


def _own_floats(model: nn.Module) -> None:
    """The float tensors a quantized load of a folder leaves (norm gains, biases, GPT-2's position
    embedding, weights whose rows are no whole blocks) copied out of the checkpoint: a float32
    safetensors file's tensors are views of its mapping, and any one left there kept the whole file
    mapped, every page quantizing read still resident (a --dtype q8_0 load's memory was float32's).
    The blocks (uint8, made by quantizing) stay; tied tensors stay tied."""
    copies: dict[int, torch.Tensor] = {}

    def own(t: torch.Tensor) -> torch.Tensor:
        if not t.is_floating_point():
            return t
        if id(t) not in copies:
            copy = t.detach().clone()
            copies[id(t)] = nn.Parameter(copy, t.requires_grad) if isinstance(t, nn.Parameter) else copy
        return copies[id(t)]

    for module in model.modules():
        for tensors in (module._parameters, module._buffers):
            for name, t in list(tensors.items()):
                if t is not None:
                    tensors[name] = own(t)  # type: ignore[assignment]


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """The fastest forward-only form of a loaded model on its device; consumes `model`.

    On CPU (float32, or bfloat16 where the CPU has it, or quantized, or float16 where the compiled step
    builds: only it reads float16 fast) the Llama family becomes a PackedLlama; Gemma a PackedGemma
    and GPT-2 a PackedGPT2 where the compiled decode step builds (native.py), or else they get
    oneDNN-packed linears (packed.py); elsewhere the model comes back as it is.
    """
    p = next(model.parameters())
    if is_quantized(model):
        # QTensor weights decode through the compiled step, which reads their blocks; without the
        # library, and on GPUs, the plain module dequantizes each weight as it runs (quant.QLinear).
        if p.device.type != "cpu" or (lib := native_library()) is None:
            return model
        return _step_form(model, lib)
    if p.dtype == torch.float16 and p.device.type == "cpu":  # only the compiled step reads float16 fast
        return model if (lib := native_library()) is None else _step_form(model, lib)
    if not can_pack(p.device, p.dtype):
        return model
    if isinstance(model, llama.Llama):
        return PackedLlama(model)
    if isinstance(model, gemma.Gemma) and native_library() is not None:
        return PackedGemma(model)
    if isinstance(model, gpt2.GPT2) and (lib := native_library()) is not None:
        return PackedGPT2(model, lib)
    return pack_linears(model)  # Gemma without the compiled step: its linears packed for oneDNN in place


def _step_form(model: nn.Module, lib) -> nn.Module:
    """The compiled step's form of a model of any family: PackedLlama, PackedGemma or PackedGPT2."""
    if isinstance(model, llama.Llama):
        return PackedLlama(model)
    if isinstance(model, gemma.Gemma):
        return PackedGemma(model)
    assert isinstance(model, gpt2.GPT2), type(model)  # FAMILIES' third
    return PackedGPT2(model, lib)


def save_pretrained(
    model: nn.Module,
    cfg: ModelConfig,
    folder: str | Path,
    tokenizer_from: str | Path | None = None,
    extra_files: dict[str, str] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write `model` as a Hugging Face folder that tiankong and transformers both load (atomic files)."""
    from .weights import save_model

    return save_model(model, cfg, folder, name_table(cfg), tokenizer_from, extra_files, metadata)
