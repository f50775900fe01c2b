#!/usr/bin/env python3
"""lcsm's CPU operators against the same math in NumPy / SciPy, on the same shapes and threads.

    python3 bench/peers/cpu_peers.py [--bench build/bench/lcsm_bench_cpu] [--quick] [--json out.json]

Runs the lcsm CPU benchmark binary (built with -DLCSM_BUILD_BENCH=ON) for the chosen shapes, then
NumPy/SciPy implementations of the same operators in float32, and prints a table of times and
ratios (theirs / ours: above 1 means lcsm is faster). Installs numpy and scipy with pip when they
are missing. Both sides use --threads threads (default 2): lcsm through its benchmark argument,
NumPy's BLAS through OMP/OPENBLAS/MKL_NUM_THREADS, scipy.fft through workers=.

The peers are the usual NumPy formulations, checked first on a small shape against a float64
recurrence (or the direct sum) so that both sides compute the same thing:
  lightning   chunked linear attention with a constant per-head decay (batched matmuls per chunk)
  scalar gate the same with per-token log-gates, cumulative inside the chunk
  vector gate per-key log-gates, q and k scaled relative to the chunk start (fla's chunk form
              without sub-chunks: exact for the benchmark's gates, but it can overflow for
              strong gates, which lcsm's sub-chunks never do)
  cosFormer   causal, ReLU features, the 2K cos/sin features and the denominator column
  Toeplitz    scipy.signal.fftconvolve and scipy.fft rfft/irfft (the faster one counts)
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", default=os.path.join(ROOT, "build", "bench", "lcsm_bench_cpu"))
    p.add_argument("--quick", action="store_true", help="small shapes (seconds), for a smoke test")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each peer (the median counts)")
    p.add_argument("--json", help="write the results here")
    return p.parse_args()


ARGS = parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)


def ensure(*modules):
    missing = []
    for m in modules:
        try:
            __import__(m)
        except ImportError:
            missing.append(m)
    if not missing:
        return
    base = [sys.executable, "-m", "pip", "install", "--quiet"] + missing
    if subprocess.call(base) != 0:  # Debian's externally managed Python refuses without this flag
        subprocess.check_call(base + ["--break-system-packages"])


ensure("numpy", "scipy")
import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402
import scipy.signal  # noqa: E402

C = 64  # chunk, as lcsm's benchmarks
K = V = 128


# ------------------------------------------------------------------------------------------------
# The peers. Attention inputs are [T, H, D] float32 (B = 1), computed head-batched per chunk.

def lightning_numpy(q, k, v, log_decay, scale):
    T, H, _ = q.shape
    lam = np.exp(log_decay).astype(np.float32)  # [H]
    i = np.arange(C)
    diff = (i[:, None] - i[None, :]).astype(np.float32)
    mask = np.where(diff >= 0, np.exp(log_decay[:, None, None] * np.maximum(diff, 0)), 0).astype(np.float32)
    q = np.ascontiguousarray(q.transpose(1, 0, 2)) * np.float32(scale)
    k = np.ascontiguousarray(k.transpose(1, 0, 2))
    v = np.ascontiguousarray(v.transpose(1, 0, 2))
    o = np.empty_like(v)
    S = np.zeros((H, q.shape[2], v.shape[2]), np.float32)
    for t0 in range(0, T, C):
        c = min(C, T - t0)
        Q, Kc, Vc = q[:, t0:t0 + c], k[:, t0:t0 + c], v[:, t0:t0 + c]
        pw = np.exp(log_decay[:, None] * np.arange(1, c + 1)).astype(np.float32)  # lambda^(i+1)
        rev = np.exp(log_decay[:, None] * np.arange(c - 1, -1, -1)).astype(np.float32)  # lambda^(c-1-j)
        o[:, t0:t0 + c] = ((Q @ Kc.transpose(0, 2, 1)) * mask[:, :c, :c]) @ Vc + (Q * pw[:, :, None]) @ S
        S = S * (lam ** c)[:, None, None] + (Kc * rev[:, :, None]).transpose(0, 2, 1) @ Vc
    return o.transpose(1, 0, 2)


def scalar_gate_numpy(q, k, v, g, scale):
    T, H, _ = q.shape
    q = np.ascontiguousarray(q.transpose(1, 0, 2)) * np.float32(scale)
    k = np.ascontiguousarray(k.transpose(1, 0, 2))
    v = np.ascontiguousarray(v.transpose(1, 0, 2))
    g = np.ascontiguousarray(g.T)  # [H, T]
    o = np.empty_like(v)
    S = np.zeros((H, q.shape[2], v.shape[2]), np.float32)
    tril = np.tril(np.ones((C, C), bool))
    for t0 in range(0, T, C):
        c = min(C, T - t0)
        Q, Kc, Vc = q[:, t0:t0 + c], k[:, t0:t0 + c], v[:, t0:t0 + c]
        G = np.cumsum(g[:, t0:t0 + c], axis=1)  # [H, c]
        D = np.exp(np.where(tril[:c, :c], G[:, :, None] - G[:, None, :], -np.inf)).astype(np.float32)
        o[:, t0:t0 + c] = ((Q @ Kc.transpose(0, 2, 1)) * D) @ Vc + (Q * np.exp(G)[:, :, None]) @ S
        Gc = G[:, -1:]
        S = S * np.exp(Gc)[:, :, None] + (Kc * np.exp(Gc - G)[:, :, None]).transpose(0, 2, 1) @ Vc
    return o.transpose(1, 0, 2)


def vector_gate_numpy(q, k, v, g, scale):
    T, H, _ = q.shape
    q = np.ascontiguousarray(q.transpose(1, 0, 2)) * np.float32(scale)
    k = np.ascontiguousarray(k.transpose(1, 0, 2))
    v = np.ascontiguousarray(v.transpose(1, 0, 2))
    g = np.ascontiguousarray(g.transpose(1, 0, 2))  # [H, T, K]
    o = np.empty_like(v)
    S = np.zeros((H, q.shape[2], v.shape[2]), np.float32)
    tril = np.tril(np.ones((C, C), np.float32))
    for t0 in range(0, T, C):
        c = min(C, T - t0)
        Q, Kc, Vc = q[:, t0:t0 + c], k[:, t0:t0 + c], v[:, t0:t0 + c]
        G = np.cumsum(g[:, t0:t0 + c], axis=1)  # [H, c, K]
        Qg = Q * np.exp(G)
        A = (Qg @ (Kc * np.exp(-G)).transpose(0, 2, 1)) * tril[:c, :c]
        o[:, t0:t0 + c] = A @ Vc + Qg @ S
        Gc = G[:, -1:, :]
        S = S * np.exp(Gc).transpose(0, 2, 1) + (Kc * np.exp(Gc - G)).transpose(0, 2, 1) @ Vc
    return o.transpose(1, 0, 2)


def cosformer_numpy(q, k, v, eps=1e-6):
    T, H, Kd = q.shape
    theta = (np.pi / 2 * np.arange(T) / T).astype(np.float32)  # M = T
    cs, sn = np.cos(theta)[None, :, None], np.sin(theta)[None, :, None]
    fq = np.maximum(np.ascontiguousarray(q.transpose(1, 0, 2)), 0)
    fk = np.maximum(np.ascontiguousarray(k.transpose(1, 0, 2)), 0)
    qf = np.concatenate([fq * cs, fq * sn], axis=2)  # [H, T, 2K]
    kf = np.concatenate([fk * cs, fk * sn], axis=2)
    vf = np.concatenate([v.transpose(1, 0, 2), np.ones((H, T, 1), np.float32)], axis=2)  # [H, T, V+1]
    out = np.empty((H, T, v.shape[2]), np.float32)
    S = np.zeros((H, 2 * Kd, vf.shape[2]), np.float32)
    tril = np.tril(np.ones((C, C), np.float32))
    for t0 in range(0, T, C):
        c = min(C, T - t0)
        Q, Kc, Vc = qf[:, t0:t0 + c], kf[:, t0:t0 + c], vf[:, t0:t0 + c]
        y = ((Q @ Kc.transpose(0, 2, 1)) * tril[:c, :c]) @ Vc + Q @ S
        out[:, t0:t0 + c] = y[:, :, :-1] / np.maximum(y[:, :, -1:], eps)
        S = S + Kc.transpose(0, 2, 1) @ Vc
    return out.transpose(1, 0, 2)


def toeplitz_fftconvolve(x, a):  # x [n, C], a [C, n] causal
    n = x.shape[0]
    return scipy.signal.fftconvolve(x, np.ascontiguousarray(a.T), axes=0)[:n]


def toeplitz_rfft(x, a):
    n = x.shape[0]
    L = scipy.fft.next_fast_len(2 * n - 1, real=True)
    w = ARGS.threads
    X = scipy.fft.rfft(x, L, axis=0, workers=w)
    A = scipy.fft.rfft(a, L, axis=1, workers=w).T
    return scipy.fft.irfft(X * A, L, axis=0, workers=w)[:n]


# ------------------------------------------------------------------------------------------------
# float64 recurrences (the check that each peer computes the operator lcsm computes).

def recurrent(q, k, v, log_decay_tk, scale):  # log_decay_tk [T, H, K]
    T, H, Kd = q.shape
    o = np.zeros((T, H, v.shape[2]))
    S = np.zeros((H, Kd, v.shape[2]))
    for t in range(T):
        S = S * np.exp(log_decay_tk[t])[:, :, None] + k[t][:, :, None] * v[t][:, None, :]
        o[t] = np.einsum("hk,hkv->hv", q[t] * scale, S)
    return o


def cosformer_direct(q, k, v, eps=1e-6):
    T = q.shape[0]
    p = np.arange(T)
    w = np.cos(np.pi * (p[:, None] - p[None, :]) / (2 * T)) * np.tril(np.ones((T, T)))
    s = np.einsum("ihk,jhk->hij", np.maximum(q, 0), np.maximum(k, 0)) * w[None]
    return np.einsum("hij,jhv->ihv", s, v) / np.maximum(s.sum(2).T[:, :, None], eps)


def toeplitz_direct(x, a):
    n = x.shape[0]
    y = np.zeros_like(x, dtype=np.float64)
    for t in range(n):
        y[t] = np.einsum("sc,cs->c", x[:t + 1][::-1], a[:, :t + 1])
    return y


def rel(a, b):
    return float(np.sqrt(np.sum((np.asarray(a, np.float64) - b) ** 2) / np.sum(np.asarray(b) ** 2)))


def self_check(rng):
    T, H, Kd = 200, 3, 16
    q, k, v = (rng.standard_normal((T, H, Kd)).astype(np.float32) for _ in range(3))
    ld = -np.array([0.01, 0.1, 0.5])
    g_s = -(0.01 + 0.5 * np.abs(rng.standard_normal((T, H)))).astype(np.float32)
    g_v = -(0.01 + 0.1 * np.abs(rng.standard_normal((T, H, Kd)))).astype(np.float32)
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    checks = {
        "lightning": rel(lightning_numpy(q, k, v, ld, 0.25),
                         recurrent(q64, k64, v64, np.broadcast_to(ld[None, :, None], (T, H, Kd)), 0.25)),
        "scalar gate": rel(scalar_gate_numpy(q, k, v, g_s, 0.25),
                           recurrent(q64, k64, v64, np.broadcast_to(g_s[:, :, None], (T, H, Kd)), 0.25)),
        "vector gate": rel(vector_gate_numpy(q, k, v, g_v, 0.25), recurrent(q64, k64, v64, g_v, 0.25)),
        "cosformer": rel(cosformer_numpy(q, k, v), cosformer_direct(q64, k64, v64)),
    }
    x = rng.standard_normal((300, 5)).astype(np.float32)
    a = rng.standard_normal((5, 300)).astype(np.float32)
    ref = toeplitz_direct(x.astype(np.float64), a.astype(np.float64))
    checks["toeplitz fftconvolve"] = rel(toeplitz_fftconvolve(x, a), ref)
    checks["toeplitz rfft"] = rel(toeplitz_rfft(x, a), ref)
    for name, err in checks.items():
        if not err < 1e-4:
            sys.exit(f"cpu_peers: the NumPy {name} does not match the float64 reference (rel. RMS {err:.2e})")
    return checks


# ------------------------------------------------------------------------------------------------

def median_ms(fn, repeats):
    fn()  # warm-up (allocations, FFT plans)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def run_lcsm(names, min_time):
    if not os.path.exists(ARGS.bench):
        sys.exit(f"cpu_peers: no benchmark binary at {ARGS.bench} (build with -DLCSM_BUILD_BENCH=ON)")
    pattern = "^(" + "|".join(names) + ")$"
    out = subprocess.run([ARGS.bench, f"--benchmark_filter={pattern}", "--benchmark_format=json",
                          f"--benchmark_min_time={min_time}"], check=True, capture_output=True, text=True).stdout
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
    return {b["name"]: b["real_time"] * scale[b["time_unit"]] for b in json.loads(out)["benchmarks"]}


def main():
    rng = np.random.default_rng(0)
    checks = self_check(rng)
    H, T = (4, 4096) if ARGS.quick else (16, 16384)
    ns = [4096] if ARGS.quick else [16384, 65536]
    Cch = 1024
    th = ARGS.threads
    rows = []  # (operator, shape, lcsm name, peer name, peer fn)

    q, k, v = (rng.standard_normal((T, H, K)).astype(np.float32) for _ in range(3))
    slopes = -np.array([2.0 ** (-8.0 * (h + 1) / H) for h in range(H)])  # lcsm::decay::alibi for H = 2^m
    # The gates of bench/cpu/gated_bench.cpp: g = -(0.01 + 0.05 |x|), x ~ N(0, 1).
    g_s = -(0.01 + 0.05 * np.abs(rng.standard_normal((T, H)))).astype(np.float32)
    g_v = -(0.01 + 0.05 * np.abs(rng.standard_normal((T, H, K)))).astype(np.float32)
    scale = 1 / np.sqrt(K)
    shape = f"H={H} T={T}"
    rows.append(("lightning forward", shape, f"BM_LightningForward/H:{H}/T:{T}/threads:{th}/real_time", "numpy",
                 lambda: lightning_numpy(q, k, v, slopes, scale)))
    rows.append(("scalar gate forward", shape, f"BM_ScalarGateForward/H:{H}/T:{T}/threads:{th}/real_time", "numpy",
                 lambda: scalar_gate_numpy(q, k, v, g_s, scale)))
    rows.append(("vector gate forward", shape, f"BM_VectorGateForward/H:{H}/T:{T}/threads:{th}/real_time", "numpy",
                 lambda: vector_gate_numpy(q, k, v, g_v, scale)))
    rows.append(("cosFormer causal fwd", shape, f"BM_CosformerForward/H:{H}/T:{T}/causal:1/threads:{th}/real_time",
                 "numpy", lambda: cosformer_numpy(q, k, v)))
    xs = {n: rng.standard_normal((n, Cch)).astype(np.float32) for n in ns}
    as_ = {n: rng.standard_normal((Cch, n)).astype(np.float32) for n in ns}
    for n in ns:
        name = f"BM_ToeplitzForward/C:{Cch}/n:{n}/causal:1/threads:{th}/real_time"
        rows.append(("Toeplitz causal fwd", f"C={Cch} n={n}", name, "scipy fftconvolve",
                     lambda n=n: toeplitz_fftconvolve(xs[n], as_[n])))
        rows.append(("Toeplitz causal fwd", f"C={Cch} n={n}", name, f"scipy.fft rfft (workers={th})",
                     lambda n=n: toeplitz_rfft(xs[n], as_[n])))

    ours = run_lcsm(sorted({r[2] for r in rows}), 0.2 if ARGS.quick else 1.0)
    results = []
    print(f"lcsm CPU peers: numpy {np.__version__}, scipy {scipy.__version__}, {th} threads "
          f"(OMP/OPENBLAS/MKL_NUM_THREADS={th}), float32, B = 1, K = V = {K}, chunk {C}")
    print("peer self-check, rel. RMS vs float64: " + ", ".join(f"{n} {e:.1e}" for n, e in checks.items()))
    print(f"\n{'operator':22} {'shape':16} {'lcsm ms':>9} {'peer':30} {'peer ms':>9} {'peer/lcsm':>9}")
    for op, shp, lname, peer, fn in rows:
        if lname not in ours:
            print(f"{op:22} {shp:16} {'(absent)':>9} {peer}")
            continue
        theirs = median_ms(fn, ARGS.repeats)
        r = {"operator": op, "shape": shp, "lcsm_ms": ours[lname], "peer": peer, "peer_ms": theirs,
             "ratio": theirs / ours[lname]}
        results.append(r)
        print(f"{op:22} {shp:16} {r['lcsm_ms']:9.2f} {peer:30} {theirs:9.2f} {r['ratio']:9.2f}")
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump({"threads": th, "numpy": np.__version__, "scipy": scipy.__version__, "self_check": checks,
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
