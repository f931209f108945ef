"""`tiankong generate` in many processes, and resumed: part files, their index, the merge.

    torchrun --nnodes 2 --nproc_per_node 8 -m tiankong.tui.cli generate --input big.jsonl -o out.jsonl

Rows (sample i of prompt p) are numbered in input order. A row's seed comes from --seed and i alone
(tui/cli_generate._encode_rows), so which process generates a row never changes what it generates; the rows
still to do are cut into batches of --batch-size and batch k goes to rank k mod WORLD_SIZE, so on a
fresh run every batch holds the same rows whatever the number of processes.

Each rank appends its finished rows to its own part file, OUTPUT.part-RANK, one JSON line per row:

    {"row": 12, "key": "<hash of the input record and the settings>", "out": "<the row's output>"}

written and fsync'ed once per batch, so a Ctrl+C, a kill or a crash loses at most the batches in
flight. After a barrier rank 0 merges the parts into OUTPUT (atomic: temporary file, fsync, rename)
in row order and removes them. Running the same command again reads every OUTPUT.part-* (whatever
number of processes wrote them) and skips the rows whose number and key match; a row of an edited
input line, or of a run with other settings, has another key and runs again. The lines of such rows
are left in the part files (the command that made them, run again, still finds them) until the merge
removes every part file; the run says how many it does not reuse. A line cut short by a kill is
ignored, and its rank cuts it off before appending.

One run at a time writes an OUTPUT: its first process holds OUTPUT.part-lock (`OutputLock`) from before
the model loads to after the merge, and a second run on the same OUTPUT is refused at its start. Two
would append to the same part files, and the first's merge would remove them under the second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from tiankong.engine.errors import InputError
from tiankong.engine.files import WriteError, atomic_open, fsync_dir, lock_with_pid, why

_PART = re.compile(r"\.part-(\d+)$")


def part_file(output: Path, rank: int) -> Path:
    return output.with_name(f"{output.name}.part-{rank}")


def part_files(output: Path) -> list[Path]:
    """Every OUTPUT.part-N beside OUTPUT, whichever run and rank wrote it, in rank order."""
    found = []
    prefix = output.name + ".part-"
    try:
        names = os.listdir(output.parent)
    except OSError:
        return []
    for name in names:
        m = _PART.search(name)
        if name.startswith(prefix) and m and name == prefix + m.group(1):
            found.append((int(m.group(1)), output.parent / name))
    return [p for _, p in sorted(found)]


def row_key(job: dict[str, Any], sample: int, params: dict[str, Any], settings: dict[str, Any]) -> str:
    """What makes a row's output: its input record, its sample number, its sampling parameters (the
    seed only when it is given, not drawn) and the run's settings (model, preset, format, ...)."""
    blob = json.dumps([job, sample, params, settings], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


# (row, key) -> (part file, byte offset of its line)
Index = dict[tuple[int, str], tuple[Path, int]]


def read_index(output: Path) -> Index:
    """Where each finished row's line is, over every part file; a torn or foreign line is skipped
    (the row runs again), and the first line of a row wins."""
    index: Index = {}
    for path in part_files(output):
        try:
            with open(path, "rb") as f:
                offset = 0
                for line in f:
                    entry = _entry(line)
                    if entry is not None:
                        index.setdefault((entry["row"], entry["key"]), (path, offset))
                    offset += len(line)
        except OSError as e:
            raise InputError(f"cannot read {path} ({e.strerror}); remove it to generate its rows again") from None
    return index


def _entry(line: bytes) -> dict[str, Any] | None:
    if not line.endswith(b"\n"):  # cut short by a kill
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    ok = isinstance(entry, dict) and isinstance(entry.get("row"), int) and isinstance(entry.get("key"), str)
    return entry if ok and isinstance(entry.get("out"), str) else None


def entry_at(path: Path, offset: int) -> dict[str, Any] | None:
    """The line at `offset` of a part file (as read_index found it), or None where it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return _entry(f.readline())
    except OSError:
        return None


def my_batches(rows: Sequence[Any], batch_size: int, rank: int, world: int) -> list[list[Any]]:
    """Batch k of the rows (in order) for rank k mod world."""
    batches = [list(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    return batches[rank::world]


class PartWriter:
    """Appends (row, key, output) lines to this rank's part file, fsync'ed per batch. The file is
    created at the first batch (a run stopped before any leaves none); a torn last line left by a
    kill is cut off first, so the next line starts on its own."""

    def __init__(self, output: Path, rank: int) -> None:
        self.path = part_file(output, rank)
        self.f: Any = None
        self.written = 0  # lines on disk (fsync'ed) from this run

    def append(self, entries: Iterable[tuple[int, str, str]]) -> None:
        lines = [json.dumps({"row": r, "key": k, "out": o}, ensure_ascii=False) + "\n" for r, k, o in entries]
        try:
            if self.f is None:
                self.f = self._open()
            self.f.write("".join(lines).encode("utf-8"))
            self.f.flush()
            os.fsync(self.f.fileno())
        except OSError as e:
            raise WriteError(self.path, why(e)) from None
        self.written += len(lines)

    def _open(self) -> Any:
        f = open(self.path, "ab+")  # appends go to the end whatever the position; reads and truncate work
        end = keep = f.seek(0, os.SEEK_END)
        while keep > 0:  # back to just after the last newline, 64 KiB at a time
            step = min(65536, keep)
            f.seek(keep - step)
            cut = f.read(step).rfind(b"\n")
            if cut >= 0:
                keep = keep - step + cut + 1
                break
            keep -= step
        if keep != end:
            f.truncate(keep)
        fsync_dir(self.path.parent)
        return f

    def close(self) -> None:
        """Close the file; WriteError if what was left in its buffer cannot be written."""
        f, self.f = self.f, None
        if f is not None:
            try:
                f.close()  # closes the descriptor even when the flush before fails
            except OSError as e:
                raise WriteError(self.path, why(e)) from None

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            self.close()
        except WriteError:
            if exc_type is None:
                raise
            # Else the error in flight (a full disk in append, most often) is the one to tell: a
            # second one from flushing the same buffer onto the same disk would hide it.


class OutputLock:
    """OUTPUT.part-lock, locked (flock) by the one run writing OUTPUT's part files, its pid inside.
    The lock ends with the process however it ends (a kill leaves the file, unlocked: the next run
    takes it); a run that ends removes the file before it unlocks it. Where there is no flock
    (Windows), nothing is locked."""

    def __init__(self, output: Path) -> None:
        self.output, self.path = output, output.with_name(f"{output.name}.part-lock")
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        if importlib.util.find_spec("fcntl") is None:
            return self
        while self.fd is None:  # None: the run that held it removed it after we opened it: lock the new one
            try:
                got = lock_with_pid(self.path)
            except OSError as e:
                raise WriteError(self.path, why(e)) from None
            if isinstance(got, str):
                raise InputError(
                    f"--output {self.output} is being written by another run (pid {got}); wait for it to end "
                    "or choose another --output"
                ) from None
            self.fd = got
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            # Removed while still locked: a run that opened it meanwhile finds it gone and takes a new one.
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


def merge(output: Path, rows: Sequence[tuple[int, str]]) -> None:
    """Write OUTPUT from the part files, one output per (row, key) in the given order, then remove
    the parts (only after OUTPUT is in place: a failure leaves them for the next run)."""
    index = read_index(output)
    missing = [r for r, k in rows if (r, k) not in index]
    if missing:
        raise InputError(
            f"{len(missing)} rows (first: row {missing[0] + 1}) are in no part file of {output}; "
            "run the same command again to generate them"
        )
    files: dict[Path, Any] = {}
    try:
        with atomic_open(output) as out:
            for row in rows:
                path, offset = index[row]
                f = files.get(path) or files.setdefault(path, open(path, "rb"))
                f.seek(offset)
                entry = _entry(f.readline())
                assert entry is not None and (entry["row"], entry["key"]) == row, (path, offset)
                out.write(entry["out"])
    finally:
        for f in files.values():
            f.close()
    for path in part_files(output):
        path.unlink(missing_ok=True)
    fsync_dir(output.parent)
