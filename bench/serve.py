"""Serving benchmark: `tiankong serve` against llama.cpp's server on the same weights, in one run.

    python bench/serve.py                              # 1, 4 and 16 clients, both servers
    python bench/serve.py --clients 1,16 --rounds 1 --skip-llamacpp

What it does, top to bottom:
  1. setup   — the random SmolLM-135M-shaped model of bench/decode.py (safetensors, and the same
               weights as GGUF F32 for llama.cpp), built there on first use, cached in bench/out/.
  2. servers — `tiankong serve` and llama-cpp-python's OpenAI server (`python -m llama_cpp.server`,
               when installed with its [server] extra, as `pip install -e '.[bench]'` does; else a
               note names what is missing) run as subprocesses with the same thread count.
  3. load    — N concurrent clients, each sending streaming /v1/completions requests one after
               another (same prompt, max_tokens, temperature, a seed per request); the servers
               take turns at every concurrency, for --rounds rounds, so a shared machine's drift
               hits both alike.
  4. report  — per server and concurrency: aggregate tokens/s (all streamed tokens over the wall
               time of the phase), p50/p95 time to first token and p50/p95 per-token latency (a
               request's mean time between tokens after its first, over the phase's requests);
               the ratios against the targets; bench/out/serve.json.

Targets: 16 clients give at least 3x one client's aggregate throughput (continuous batching), and
tiankong's aggregate throughput is at least llama.cpp server's at every concurrency.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode import (  # noqa: E402  (bench/decode.py builds the model)
    BENCH_EXTRA,
    GGUF_PATH,
    MODEL_DIR,
    OUT,
    Help,
    end_children_on_sigterm,
    importable,
)

RESULT_JSON = OUT / "serve.json"
TARGETS = dict(batch16_over_1=3.0, vs_llamacpp=1.0)
PROMPT = "Once upon a time, in a small village by the sea, there lived an old fisherman who"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, path: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with code {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server on port {port} did not come up in {timeout:.0f} s")


# What `python -m llama_cpp.server` imports besides llama_cpp: llama-cpp-python's [server] extra.
SERVER_MODULES = ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


def llamacpp_server_note() -> str | None:
    """Why llama.cpp's server cannot run here and what to install, or None where it can (the model's
    GGUF F32 copy aside: decode.py makes it)."""
    missing = [m for m in ("llama_cpp", *SERVER_MODULES) if not importable(m)]
    if not missing:
        return None
    return (
        f"llama.cpp's server skipped: {', '.join(missing)} not importable; it needs llama-cpp-python with "
        f"its [server] extra ({BENCH_EXTRA}, or pip install 'llama-cpp-python[server]')"
    )


def start_servers(args, servers: dict[str, tuple[subprocess.Popen, int]]) -> None:
    """Starts the servers to compare into `servers` (name -> (process, port)), each put there as soon
    as it runs, so that the caller stops it whatever happens next; returns once all are healthy."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    port = free_port()
    cmd = [sys.executable, "-m", "tiankong.tui.cli", "serve", "-m", str(MODEL_DIR), "--port", str(port)]
    cmd += ["--max-rows", "16", "--max-queue", "64"]
    servers["tiankong"] = (subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL), port)
    # llama-cpp-python's server decodes one request at a time (its own lock); that is what it offers.
    if not args.skip_llamacpp and llamacpp_server_note() is None and GGUF_PATH.is_file():
        port = free_port()
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(GGUF_PATH), "--port", str(port)]
        cmd += ["--n_ctx", "2048", "--n_threads", str(args.threads), "--n_batch", "512", "--verbose", "False"]
        # By default a new request interrupts the one being streamed; queue them instead.
        cmd += ["--interrupt_requests", "False"]
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers["llama.cpp"] = (subprocess.Popen(cmd, env=env, **quiet), port)
    for proc, port in servers.values():
        wait_healthy(port, "/v1/models", proc)


# The same sampling on both: temperature 0.7 and top-k 40, nothing else (llama-cpp-python's server
# defaults to top-p 0.95, min-p 0.05 and a repeat penalty of 1.1 besides; its top_k 0 path, "all
# tokens", takes about a second per token in its Python sampler at this vocabulary).
SAMPLING = {"temperature": 0.7, "top_k": 40, "top_p": 1.0}
EXTRA = {"tiankong": {}, "llama.cpp": {"min_p": 0.0, "repeat_penalty": 1.0}}


def stream_one(port: int, seed: int, args, extra: dict) -> dict:
    """One streaming completion -> {"ttft": s, "per_token": s (mean time between its tokens), "tokens": n}."""
    body = json.dumps(
        {
            "prompt": PROMPT,
            "max_tokens": args.max_tokens,
            **SAMPLING,
            "seed": seed,
            "stream": True,
            **extra,
        }
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()[:300]
    times, finish = [], None
    for line in resp:
        if not line.startswith(b"data: {"):
            continue
        choice = json.loads(line[6:])["choices"][0]
        finish = choice.get("finish_reason") or finish
        if choice.get("finish_reason") is None:
            times.append(time.perf_counter())
    conn.close()
    # llama-cpp-python holds back pieces that are not whole UTF-8 characters (random weights emit
    # many), so it streams fewer chunks than tokens: a request that ran to max_tokens made
    # max_tokens. (Asking both for logprobs would give one chunk per token, but costs llama-cpp-python
    # a full-vocabulary pass in Python per token: half its speed.)
    tokens = args.max_tokens if finish == "length" else len(times)
    per_token = (times[-1] - times[0]) / (tokens - 1) if tokens > 1 and len(times) > 1 else float("nan")
    return {"ttft": times[0] - t0 if times else float("nan"), "per_token": per_token, "tokens": tokens}


def load(port: int, clients: int, args, extra: dict) -> dict:
    """`clients` threads, each sending --requests streaming requests in turn -> the phase's figures."""
    results: list[dict] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(args.requests):
            out = stream_one(port, 1000 * c + r, args, extra)
            with lock:
                results.append(out)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(r["tokens"] for r in results)
    ttft = sorted(r["ttft"] for r in results)
    per_token = sorted(r["per_token"] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "ttft_p50_s": pct(ttft, 50),
        "ttft_p95_s": pct(ttft, 95),
        "token_p50_s": pct(per_token, 50),
        "token_p95_s": pct(per_token, 95),
    }


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))] if xs else float("nan")


def best(phases: list[dict]) -> dict:
    """The round with the highest throughput: other processes only ever slow a phase down."""
    return max(phases, key=lambda p: p["tokens_per_s"])


def report(results: dict[str, dict[int, list[dict]]], args) -> dict:
    names = list(results)
    print(f"\n{'server':<10} {'clients':>7} {'tok/s':>8} {'TTFT p50':>9} {'p95':>7} {'tok p50':>8} {'p95':>7}")
    table = {}
    for name in names:
        for n, phases in results[name].items():
            b = best(phases)
            table.setdefault(name, {})[n] = b
            print(
                f"{name:<10} {n:>7} {b['tokens_per_s']:>8.1f} {b['ttft_p50_s'] * 1e3:>7.0f}ms "
                f"{b['ttft_p95_s'] * 1e3:>5.0f}ms {b['token_p50_s'] * 1e3:>6.1f}ms {b['token_p95_s'] * 1e3:>5.1f}ms"
            )
    ratios = {}
    tk = table["tiankong"]
    if 1 in tk and 16 in tk:
        ratios["tiankong_16_over_1"] = tk[16]["tokens_per_s"] / tk[1]["tokens_per_s"]
    if "llama.cpp" in table:
        for n in tk:
            ratios[f"vs_llamacpp_{n}"] = tk[n]["tokens_per_s"] / table["llama.cpp"][n]["tokens_per_s"]
    print()
    for key, value in ratios.items():
        target = TARGETS["batch16_over_1"] if key.endswith("16_over_1") else TARGETS["vs_llamacpp"]
        print(f"{key:<22} {value:6.2f}x  (target >= {target}x: {'met' if value >= target else 'NOT met'})")
    out = {"args": vars(args), "best": table, "ratios": ratios, "rounds": results}
    RESULT_JSON.write_text(json.dumps(out, indent=1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=Help)
    ap.add_argument("--clients", default="1,4,16", help="concurrencies, comma-separated")
    ap.add_argument("--requests", type=int, default=1, help="requests per client per phase")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens per request")
    ap.add_argument("--rounds", type=int, default=2, help="rounds (best reported)")
    # 1 by default: on a machine other processes share, ggml's spinning thread pool collapses when one
    # of its threads is descheduled (2 threads decoded 20x slower than 1 on the project's loaded box).
    ap.add_argument("--threads", type=int, default=1, help="threads per server")
    ap.add_argument("--skip-llamacpp", action="store_true", help="leave llama.cpp's server out")
    args = ap.parse_args()
    if not (MODEL_DIR / "model.safetensors").is_file():
        sys.exit(f"no model in {MODEL_DIR}: run `python bench/decode.py` once to build it (and its GGUF)")
    note = None if args.skip_llamacpp else llamacpp_server_note()
    if note is None and not args.skip_llamacpp and not GGUF_PATH.is_file():
        note = f"llama.cpp's server skipped: no {GGUF_PATH} (`python bench/decode.py` makes it)"
    if note:
        print(note, flush=True)
    end_children_on_sigterm()
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        start_servers(args, servers)
        levels = [int(c) for c in args.clients.split(",")]
        results: dict[str, dict[int, list[dict]]] = {name: {n: [] for n in levels} for name in servers}
        for name, (_, port) in servers.items():
            stream_one(port, 0, args, EXTRA[name])  # warm-up: first-request costs (the compiled step, caches)
        for rnd in range(args.rounds):
            for n in levels:
                for name, (_, port) in servers.items():  # the servers take turns at every level
                    phase = load(port, n, args, EXTRA[name])
                    results[name][n].append(phase)
                    print(
                        f"round {rnd + 1} {name:<10} {n:>2} clients: {phase['tokens_per_s']:7.1f} tok/s "
                        f"({phase['tokens']} tokens in {phase['requests']} requests, {phase['wall_s']:.1f} s)",
                        flush=True,
                    )
        report(results, args)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
