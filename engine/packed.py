"""oneDNN pre-packed linear weights for CPU inference, and handing their source pages back.

Decoding one token is a chain of matrix-vector products, so its speed is how fast the weights
stream from memory. torch's dense `F.linear` reaches about a third of the machine's bandwidth at
batch 1 (it runs on one thread) and gets slower per row at 2-4 rows (the batch of a side-by-side
comparison). oneDNN with weights reordered once into its blocked layout streams them at close to
full bandwidth for any row count, and also speeds up prefill; `bench/decode.py` measures it.

The Llama family gets a whole inference form built on these (llama_packed.py; in float32 it
decodes through a compiled step instead, where one builds: native.py); other models have
their linear layers swapped for `PackedLinear` in place (`pack_linears`). Either way a dense
weight is dropped as soon as its packed copy exists, and the result only runs forward under
inference mode; trainers load models without it. `model.prepare_for_inference` picks the form.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
import threading

import torch
from torch import nn

# oneDNN picks its blocked layout for an expected row count; 8 serves 1-4 decode rows and
# prefill equally well (measured 1, 2, 4, 8, 32: within noise of each other from 4 up).
ROWS_HINT = 8


def can_pack(device: torch.device, dtype: torch.dtype) -> bool:
    """oneDNN packing helps on CPU for float32 and bfloat16 (the latter where the CPU has bf16)."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


def pack_weight(w: torch.Tensor) -> torch.Tensor:
    """A dense (out, in) weight as an opaque oneDNN tensor in its blocked layout, for _linear_pointwise."""
    return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), ROWS_HINT)


class PackedLinear(nn.Module):
    """`y = x W^T + b` with W held in oneDNN's blocked layout (an opaque mkldnn tensor)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("packed", pack_weight(linear.weight.detach()), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (..., in) -> (..., out); oneDNN flattens the leading dims itself.
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed=oneDNN"


def _file_ranges() -> list[tuple[int, int]]:
    """The address ranges [lo, hi) of this process's mappings of regular files (Linux /proc/self/maps),
    read once for all the tensors of a release_pages call (a GGUF layer's seven weights)."""
    ranges = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].startswith("/"):
                    lo, hi = (int(a, 16) for a in fields[0].split("-"))
                    ranges.append((lo, hi))
    except OSError:
        pass
    return ranges


def _file_mapped(t: torch.Tensor, ranges: list[tuple[int, int]] | None = None) -> bool:
    """True if t's memory lies in a mapping of a regular file (ranges: _file_ranges(), read here if not given)."""
    ptr = t.data_ptr()
    return any(lo <= ptr < hi for lo, hi in (_file_ranges() if ranges is None else ranges))


def release_pages(tensors: list[torch.Tensor], only_file_mapped: bool = False) -> None:
    """Let the OS take back the memory of weights that were just packed.

    Loaded weights are views of the checkpoint file mapped into memory (safetensors mmap): every page
    read while packing stays resident, and counted in the process's memory, for as long as any
    tensor of the file is alive (the token embedding is). MADV_DONTNEED on the whole pages inside
    a weight gives them back at once. For a file mapping the tensor stays valid (a later read faults
    the page in again from the page cache), which is how the tied embedding can give its pages back
    and still serve lookups. For anonymous memory the pages would read back as zeros, so that is
    only done to tensors about to be dropped, and only_file_mapped=True refuses it.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    ranges = _file_ranges() if only_file_mapped and tensors else []
    for t in tensors:
        if t.device.type != "cpu" or (only_file_mapped and not _file_mapped(t, ranges)):
            continue
        start = t.data_ptr()
        lo, hi = -(-start // page) * page, (start + t.numel() * t.element_size()) // page * page
        if hi > lo:
            libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), 4)  # 4 = MADV_DONTNEED


def trim_heap() -> None:
    """Return freed heap memory to the OS (glibc's malloc_trim), e.g. the temporaries of packing.

    glibc keeps freed chunks for reuse; between the long-lived packed weights they can never be
    reused by anything the size of a weight, and would stay in the process's memory for good.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except AttributeError:  # not glibc (musl has no malloc_trim)
            pass


HUGE_PAGE = 2 << 20  # x86-64's transparent huge page
MADV_POPULATE_WRITE = 23  # Linux 5.14+; Python's mmap module does not name it before 3.13


def huge_empty(numel: int, dtype: torch.dtype, zeroed: bool = False) -> torch.Tensor:
    """A CPU tensor of numel elements, uninitialised unless zeroed, in memory the OS backs with 2 MB
    pages where it can: Linux's transparent huge pages, asked for with MADV_HUGEPAGE before any page
    is touched (where THP is "madvise", as on this box and many distributions, nothing gets them
    unasked); elsewhere, and under 2 MB, torch's own memory. Its pages fault in as they are first
    written: the weights' buffer, filled front to back by copies that spread the faults over their
    threads. (A KV cache comes from a HugePagePool instead.)

    Why: a decode step streams every weight once (and, deep in a chat, the whole KV cache), and in
    4 KB pages that is a TLB miss and a new start for the hardware prefetcher every 4 KB. With the
    weights and cache in huge pages one 135M row took 0.86-0.95x the time (bench/hugepages.py).
    """
    nbytes = numel * dtype.itemsize
    mapping = _huge_mapping(nbytes)
    if mapping is None:
        return torch.zeros(numel, dtype=dtype) if zeroed else torch.empty(numel, dtype=dtype)
    return _tensor_in(mapping, nbytes, dtype)


def _huge_mapping(nbytes: int) -> mmap.mmap | None:
    """A fresh private anonymous mapping (its pages appear, zeroed, when first touched) advised for
    huge pages, large enough for nbytes from a 2 MB boundary; None under 2 MB or without the API."""
    if not hasattr(mmap, "MADV_HUGEPAGE") or not hasattr(mmap, "MAP_ANONYMOUS") or nbytes < HUGE_PAGE:
        return None
    # private and anonymous: a shared one would be shmem, whose huge pages are another setting
    mapping = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        mapping.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # THP switched off ("never"), or a kernel without it: plain pages
        pass
    return mapping


def _tensor_in(mapping: mmap.mmap, nbytes: int, dtype: torch.dtype) -> torch.Tensor:
    """nbytes of the mapping from its first 2 MB boundary, as a flat tensor of dtype. The tensor's
    storage holds a reference to the mapping (its buffer export) for as long as the storage lives."""
    whole = torch.frombuffer(mapping, dtype=torch.uint8)
    skip = -whole.data_ptr() % HUGE_PAGE
    return whole[skip : skip + nbytes].view(dtype)


def _populate(mapping: mmap.mmap) -> None:
    """Fault every page of a fresh mapping in now, on this one thread.

    Why: left to the first writer, a huge page is faulted in by whichever thread touches it first,
    and two threads writing all over a fresh mapping (torch's copy of a prompt's keys and values
    into every row's slots, the compiled step) fault on the same 2 MB pages at once. On this box the
    first fill of the four-row cache (15 MB) took 45-75 ms on two threads against 1.4-1.8 ms on one.
    The kernel does it in one call where it can (MADV_POPULATE_WRITE); elsewhere one write per 2 MB
    faults each huge page in (a page the kernel could not make huge is then one 4 KB page, the rest
    of it faulting in when used).
    """
    try:
        mapping.madvise(MADV_POPULATE_WRITE)
    except OSError:  # before Linux 5.14
        for at in range(0, len(mapping), HUGE_PAGE):
            mapping[at] = 0


class HugePagePool:
    """Zeroed buffers in huge pages (as huge_empty's), whose mappings are kept once their tensors are
    gone and handed out again: the KV caches.

    Why: every generate call, every comparison's rows leaving the batch and every request joining a
    server's batch makes a new cache. A fresh mapping's pages must be faulted in again, and on this
    box (a VM) memory the process has not had before is slow to get: a 14 MB cache took 110 ms to
    fault in the first time, 1.6-2.1 ms once the process had freed one. Four presets' first token
    (bench/hugepages.py): 36.5 ms with torch's 4 KB pages (which glibc keeps and reuses), 91.3 with
    a new huge-page mapping per cache, 35.8 from this pool, where the pages are there and only need
    zeroing. A new mapping is faulted in at once on this thread (`_populate`).

    A mapping is free when no tensor uses it: each storage made from it holds one reference to it,
    so the pool's own reference is then the only one (CPython's reference counts, read under a
    lock, so that two threads never take the same mapping). At most `keep` free mappings stay; a
    buffer is only taken from a mapping at most twice its size.
    """

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._mappings: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def zeros(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        """A zeroed flat tensor of numel elements: in a free kept mapping, or a new one."""
        nbytes = numel * dtype.itemsize
        with self._lock:
            i = self._free_fit(nbytes + HUGE_PAGE)
            if i is not None:
                out = _tensor_in(self._mappings[i], nbytes, dtype)
                return out.zero_()
            mapping = _huge_mapping(nbytes)
            if mapping is None:
                return torch.zeros(numel, dtype=dtype)
            _populate(mapping)
            self._mappings.append(mapping)
            out = _tensor_in(mapping, nbytes, dtype)
            self._trim(self.keep)
            return out

    def drop_free(self) -> None:
        """Hand every free mapping back to the OS (before a cache that needs the memory)."""
        with self._lock:
            self._trim(0)

    def _free(self, i: int) -> bool:
        # getrefcount's argument and the list's slot: no storage holds mapping i
        return sys.getrefcount(self._mappings[i]) <= 2

    def _free_fit(self, need: int) -> int | None:
        """The smallest free mapping of need to 2 need bytes, or None."""
        fits = [i for i in range(len(self._mappings)) if need <= len(self._mappings[i]) <= 2 * need and self._free(i)]
        return min(fits, key=lambda i: len(self._mappings[i]), default=None)

    def _trim(self, keep: int) -> None:
        """Keep the newest `keep` free mappings (and every one in use). By index: a loop variable
        holding a mapping would count as a user."""
        free = [i for i in range(len(self._mappings)) if self._free(i)]
        for i in reversed(free[: max(0, len(free) - keep)]):
            del self._mappings[i]


def pack_linears(model: nn.Module) -> nn.Module:
    """Swap every nn.Linear of `model` for a PackedLinear, in place; returns the model.

    An output projection tied to the token embedding is packed too: lookups keep reading the dense
    embedding, whose pages (when mapped from the checkpoint) are handed back after packing, so only
    the rows looked up come back into memory.
    """
    embedded = {m.weight.data_ptr() for m in model.modules() if isinstance(m, nn.Embedding)}
    # Module by module, so that at most one block's weights exist twice (dense and packed) at a time.
    for part in list(model.modules()):
        linears = [(n, c) for n, c in part.named_children() if isinstance(c, nn.Linear)]
        if not linears:
            continue
        dense = [c.weight.detach() for _, c in linears]
        for name, child in linears:
            setattr(part, name, PackedLinear(child))
        release_pages([w for w in dense if w.data_ptr() not in embedded])
        release_pages([w for w in dense if w.data_ptr() in embedded], only_file_mapped=True)
        trim_heap()
    return model


__all__ = [
    "HUGE_PAGE",
    "PackedLinear",
    "ROWS_HINT",
    "can_pack",
    "huge_empty",
    "HugePagePool",
    "pack_linears",
    "pack_weight",
    "release_pages",
    "trim_heap",
]
