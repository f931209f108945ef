"""What the four-row quantized product's instructions cost on this CPU, in core cycles.

The step's four-row q4_0 / q8_0 kernel (engine/csrc/repack.h, x8_group) does, per eight-row block of
32 columns: 32 integer dot products (vpdpbusd, 256-bit), then per input row one int -> float
conversion, one multiply of the scales and one FMA, plus (q4_0) 12 simple integer ops unpacking the
nibbles. Whether those extra ops share execution ports with the dot products decides the kernel's
floor. This script compiles a tiny C program that times, on independent registers (no dependency
chains to wait on), 16 dot products alone and with 8 of each other op added, and converts the
timestamp counter to core cycles with a chain of dependent integer adds (1 cycle each on every
x86 core). Needs a C compiler and a CPU with AVX-512 VNNI (VL); prints a note otherwise.

    python bench/pipes.py
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from decode import Help, end_children_on_sigterm

N_ACC = 16  # independent dot-product accumulators: enough to fill two pipes of latency 4

PROGRAM = r"""
#include <immintrin.h>
#include <stdio.h>
#include <x86intrin.h>
#define N 200000
#define KEEP(x) __asm__ volatile("" ::"v"(x))
static double best_ticks(unsigned long long (*f)(void)) {
    unsigned long long b = ~0ull;
    for (int r = 0; r < 15; r++) { unsigned long long t = f(); if (t < b) b = t; }
    return (double)b / N;
}
/* ticks per 1-cycle step: a chain of dependent adds */
static unsigned long long chain(void) {
    unsigned long long x = 1, t0 = __rdtsc();
    for (int i = 0; i < N; i++) { __asm__ volatile("add %0, %0\n\tadd %0, %0\n\tadd %0, %0\n\tadd %0, %0" : "+r"(x)); }
    return (__rdtsc() - t0) / 4;
}
BODIES
int main(void) {
    const double tpc = best_ticks(chain);
    printf("ticks_per_cycle %.4f\n", tpc);
    PRINTS
    return 0;
}
"""


def _mode(name: str, extra: str, zmm: bool = False) -> str:
    """One timed loop: N_ACC independent dot products (+ `extra`) per iteration."""
    vec, dot, set8, set32 = (
        ("__m512i", "_mm512_dpbusd_epi32", "_mm512_set1_epi8", "_mm512_set1_epi32")
        if zmm
        else ("__m256i", "_mm256_dpbusd_epi32", "_mm256_set1_epi8", "_mm256_set1_epi32")
    )
    accs = ", ".join(f"a{i} = {set32}({i})" for i in range(N_ACC))
    dots = " ".join(f"a{i} = {dot}(a{i}, u, v);" for i in range(N_ACC))
    keeps = " ".join(f"KEEP(a{i});" for i in range(N_ACC))
    # named registers, not arrays: an array may live in memory, and then its loop-carried
    # store -> load chains, not the ports, set the time
    floats = ", ".join(f"f{k} = _mm256_set1_ps({k}.f)" for k in range(8))
    ints = ", ".join(f"r{k} = _mm256_set1_epi8({k})" for k in range(8))
    keep8 = " ".join(f"KEEP(f{k}); KEEP(r{k});" for k in range(8))
    return f"""
static unsigned long long {name}(void) {{
    {vec} {accs};
    {vec} u = {set8}(3), v = {set8}(5);
    __m256 g = _mm256_set1_ps(0.5f), {floats};
    __m256i m = _mm256_set1_epi8(15), {ints};
    unsigned long long t0 = __rdtsc();
    for (int it = 0; it < N; it++) {{
        {dots}
        {extra}
    }}
    unsigned long long t = __rdtsc() - t0;
    {keeps} {keep8} KEEP(g); KEEP(m);
    return t;
}}
"""


MODES = [
    ("dots", "16 vpdpbusd (256-bit)", "", False),
    (
        "dots_fma",
        "+ 8 FMA",
        "f0 = _mm256_fmadd_ps(g, g, f0); f1 = _mm256_fmadd_ps(g, g, f1); f2 = _mm256_fmadd_ps(g, g, f2); f3 = _mm256_fmadd_ps(g, g, f3); f4 = _mm256_fmadd_ps(g, g, f4); f5 = _mm256_fmadd_ps(g, g, f5); f6 = _mm256_fmadd_ps(g, g, f6); f7 = _mm256_fmadd_ps(g, g, f7);",
        False,
    ),
    (
        "dots_mul",
        "+ 8 float multiplies",
        "f0 = _mm256_mul_ps(g, f0); f1 = _mm256_mul_ps(g, f1); f2 = _mm256_mul_ps(g, f2); f3 = _mm256_mul_ps(g, f3); f4 = _mm256_mul_ps(g, f4); f5 = _mm256_mul_ps(g, f5); f6 = _mm256_mul_ps(g, f6); f7 = _mm256_mul_ps(g, f7);",
        False,
    ),
    (
        "dots_cvt",
        "+ 8 int -> float conversions",
        "f0 = _mm256_cvtepi32_ps(r0); KEEP(f0); f1 = _mm256_cvtepi32_ps(r1); KEEP(f1); f2 = _mm256_cvtepi32_ps(r2); KEEP(f2); f3 = _mm256_cvtepi32_ps(r3); KEEP(f3); f4 = _mm256_cvtepi32_ps(r4); KEEP(f4); f5 = _mm256_cvtepi32_ps(r5); KEEP(f5); f6 = _mm256_cvtepi32_ps(r6); KEEP(f6); f7 = _mm256_cvtepi32_ps(r7); KEEP(f7);",
        False,
    ),
    (
        "dots_unpack",
        "+ 8 nibble unpacks (and, shift+and)",
        "r0 = _mm256_and_si256(r1, m); r1 = _mm256_and_si256(_mm256_srli_epi16(r0, 4), m); r2 = _mm256_and_si256(r3, m); r3 = _mm256_and_si256(_mm256_srli_epi16(r2, 4), m); r4 = _mm256_and_si256(r5, m); r5 = _mm256_and_si256(_mm256_srli_epi16(r4, 4), m); r6 = _mm256_and_si256(r7, m); r7 = _mm256_and_si256(_mm256_srli_epi16(r6, 4), m);",
        False,
    ),
    ("dots_zmm", "16 vpdpbusd (512-bit: twice the products)", "", True),
]


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=Help).parse_args()  # --help, no options
    end_children_on_sigterm()
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("no C compiler (cc/gcc) found")
        return 0
    bodies = "".join(_mode(name, extra, zmm) for name, _, extra, zmm in MODES)
    prints = "\n    ".join(f'printf("{name} %.4f\\n", best_ticks({name}) / tpc);' for name, *_ in MODES)
    src = PROGRAM.replace("BODIES", bodies).replace("PRINTS", prints)
    with tempfile.TemporaryDirectory() as tmp:
        c, exe = Path(tmp) / "pipes.c", Path(tmp) / "pipes"
        c.write_text(src)
        built = subprocess.run([cc, "-O2", "-march=native", str(c), "-o", str(exe)], capture_output=True, text=True)
        if built.returncode != 0:
            print("this CPU or compiler has no AVX-512 VNNI: nothing to measure")
            return 0
        out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    values = dict((k, float(v)) for k, v in (line.split() for line in out.splitlines()))
    base = values["dots"]
    print(f"timestamp counter ticks per core cycle: {values['ticks_per_cycle']:.3f}")
    print(f"{'one iteration':45} {'core cycles':>11} {'over the dots alone':>20}")
    for name, label, _, _ in MODES:
        print(f"{label:45} {values[name]:11.2f} {values[name] - base:+20.2f}")
    print("16 dot products at two a cycle take 8 cycles; each op that shares their two ports adds half a cycle,")
    print("an op on other ports adds nothing while the dot products' ports are the bottleneck.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
