#!/usr/bin/env python3
"""lcsm's CPU operators against the same math in NumPy / SciPy, on the same shapes and threads.

    python3 bench/peers/cpu_peers.py [--bench build/bench/lcsm_bench_cpu] [--quick] [--json out.json]

Runs the lcsm CPU benchmark binary (built with -DLCSM_BUILD_BENCH=ON) for the chosen shapes, then
NumPy/SciPy implementations of the same operators in float32, and prints a table of times and
ratios (theirs / ours: above 1 means lcsm is faster). Default shapes: H = 16, T = 16384 for the
attention operators, C = 1024, n = 16384 and 65536 for Toeplitz (--quick: H = 4, T = 4096, n = 4096,
a minute or two on 2 busy cores). Shapes the binary has no benchmark for (e.g. without cosformer_bench.cpp) are listed
as absent. Both sides use --threads threads (default 2, the benchmarks' count): lcsm through its
benchmark argument, NumPy's BLAS through OMP/OPENBLAS/MKL_NUM_THREADS (set before NumPy loads; the
count BLAS reports is printed), scipy.fft through workers=. Each peer is also timed with 1 thread
(threadpoolctl's limit, workers=1) and, for the attention operators, with --threads Python threads
over the heads, 1 BLAS thread each (NumPy releases the GIL in its kernels); the fastest way counts
(column thr: 2, 1 or 2h). The peers' matmuls are small (64 x 128 per head), where 2 BLAS threads
can lose to 1, badly so when another process shares the cores.

Dependencies: numpy, scipy and threadpoolctl (to read BLAS's thread count), installed when missing
with `python3 -m pip install --quiet`, retried with --break-system-packages where a Debian/Ubuntu
system Python refuses (externally managed environment). To keep the system Python clean, run it
from a venv instead: python3 -m venv /tmp/peers && /tmp/peers/bin/python bench/peers/cpu_peers.py

The peers are the usual NumPy formulations, checked first on a small shape against a float64
recurrence (or the direct sum) so that both sides compute the same thing:
  lightning   chunked linear attention with a constant per-head decay (batched matmuls per chunk)
  scalar gate the same with per-token log-gates, cumulative inside the chunk
  vector gate per-key log-gates, q and k scaled relative to the chunk start (fla's chunk form
              without sub-chunks: exact for the benchmark's gates, checked to stay far from
              overflow, which strong gates would reach and lcsm's sub-chunks never do)
  cosFormer   causal, ReLU features, the 2K cos/sin features and the denominator column
  Toeplitz    causal and bidirectional, scipy.signal.fftconvolve and scipy.fft rfft/irfft (both
              listed; the faster, marked *, is the one to quote)
"""
import argparse
import concurrent.futures
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
        if subprocess.call(base + ["--break-system-packages"]) != 0:
            sys.exit(f"cpu_peers: could not install {' '.join(missing)} with pip; run from a venv (see --help)")


ensure("numpy", "scipy", "threadpoolctl")
import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402
import scipy.signal  # noqa: E402
import threadpoolctl  # noqa: E402

C = 64  # chunk, as lcsm's benchmarks
PEER_WORKERS = ARGS.threads  # scipy.fft's workers, set with the BLAS limit while timing
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


# x [n, C]; a [C, n] causal (a_0 first) or [C, 2n - 1] bidirectional (a_-(n-1) .. a_(n-1), a_0 at
# n - 1, lcsm's layout). y[t] = sum_s a[t - s] x[s] is the full convolution's entry t + centre.
def toeplitz_fftconvolve(x, a):
    n = x.shape[0]
    centre = a.shape[1] - n
    return scipy.signal.fftconvolve(x, np.ascontiguousarray(a.T), axes=0)[centre:centre + n]


def toeplitz_rfft(x, a):
    # Length 2n - 1 suffices for both forms: the wrapped-around terms miss rows centre .. centre + n - 1.
    n = x.shape[0]
    centre = a.shape[1] - n
    L = scipy.fft.next_fast_len(2 * n - 1, real=True)
    w = PEER_WORKERS
    X = scipy.fft.rfft(x, L, axis=0, workers=w)
    A = scipy.fft.rfft(a, L, axis=1, workers=w).T
    return scipy.fft.irfft(X * A, L, axis=0, workers=w)[centre:centre + n]


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


def toeplitz_direct(x, a):  # the plain sum over s, both forms (a_r at column r + centre)
    n = x.shape[0]
    centre = a.shape[1] - n
    y = np.zeros_like(x, dtype=np.float64)
    for t in range(n):
        s = np.arange(n) if centre else np.arange(t + 1)
        y[t] = np.einsum("sc,cs->c", x[s], a[:, t - s + centre])
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
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # the head split must not change the result
        split = over_heads(lambda a, b: scalar_gate_numpy(q[:, a:b], k[:, a:b], v[:, a:b], g_s[:, a:b], 0.25),
                           H, pool, 2)
    checks["heads split"] = rel(split, scalar_gate_numpy(q, k, v, g_s, 0.25).astype(np.float64))
    n = 300
    x = rng.standard_normal((n, 5)).astype(np.float32)
    for form, count in (("causal", n), ("bidir", 2 * n - 1)):
        a = rng.standard_normal((5, count)).astype(np.float32)
        ref = toeplitz_direct(x.astype(np.float64), a.astype(np.float64))
        checks[f"toeplitz {form} fftconvolve"] = rel(toeplitz_fftconvolve(x, a), ref)
        checks[f"toeplitz {form} rfft"] = rel(toeplitz_rfft(x, a), ref)
    for name, err in checks.items():
        if not err < 1e-3:
            sys.exit(f"cpu_peers: the NumPy {name} does not match the float64 reference (rel. RMS {err:.2e})")
    return checks


# ------------------------------------------------------------------------------------------------

def over_heads(head_range_fn, H, pool, parts):
    """The peer run on `parts` disjoint head ranges in the pool's threads, joined on the head axis."""
    bounds = np.linspace(0, H, parts + 1).astype(int)
    parts = pool.map(lambda i: head_range_fn(bounds[i], bounds[i + 1]), range(len(bounds) - 1))
    return np.concatenate(list(parts), axis=1)


def best_median_ms(fn, by_heads, repeats, pool):
    """(ms, how): the median with --threads BLAS/FFT threads, with 1, and (by_heads) with the heads
    split over the pool's threads at 1 BLAS thread each; the fastest."""
    global PEER_WORKERS
    ways = [(fn, 1, "1")]  # the usual winner first, so that slower ways can stop after their warm-up
    if by_heads and ARGS.threads > 1:
        ways.append((by_heads, 1, f"{ARGS.threads}h"))
    if ARGS.threads > 1:
        ways.append((fn, ARGS.threads, str(ARGS.threads)))
    timings = []
    for run, threads, how in ways:
        PEER_WORKERS = threads
        with threadpoolctl.threadpool_limits(limits=threads):
            timings.append((median_ms(run, repeats, 2 * min(timings)[0] if timings else None), how))
    PEER_WORKERS = ARGS.threads
    return min(timings)


def median_ms(fn, repeats, give_up_ms=None):
    """Median of `repeats` runs after a warm-up; just the warm-up's time if that exceeds give_up_ms."""
    t0 = time.perf_counter()
    fn()  # warm-up (allocations, FFT plans)
    warm_up = (time.perf_counter() - t0) * 1e3
    if give_up_ms is not None and warm_up > give_up_ms:
        return warm_up
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
    rows = []  # (operator, shape, lcsm name, peer name, peer fn, peer split over heads or None)

    q, k, v = (rng.standard_normal((T, H, K)).astype(np.float32) for _ in range(3))
    slopes = -np.array([2.0 ** (-8.0 * (h + 1) / H) for h in range(H)])  # lcsm::decay::alibi for H = 2^m
    # The gates of bench/cpu/gated_bench.cpp: g = -(0.01 + 0.05 |x|), x ~ N(0, 1).
    g_s = -(0.01 + 0.05 * np.abs(rng.standard_normal((T, H)))).astype(np.float32)
    g_v = -(0.01 + 0.05 * np.abs(rng.standard_normal((T, H, K)))).astype(np.float32)
    # The vector-gate peer scales k by exp(-G) inside a chunk: fine while |G| stays far from float's
    # exp range (88); check that the benchmark's gates do, so that its time is for valid output.
    worst = float(np.max(-np.cumsum(g_v[:T // C * C].reshape(T // C, C, H, K), axis=1)))
    if worst > 40:
        sys.exit(f"cpu_peers: vector gates too strong for the per-chunk peer (cumulative {worst:.1f} in a chunk)")
    scale = 1 / np.sqrt(K)
    shape = f"H={H} T={T}"
    pool = concurrent.futures.ThreadPoolExecutor(th)
    attention = {  # operator: (lcsm benchmark, peer on heads [a, b))
        "lightning forward": ("BM_LightningForward/H:{H}/T:{T}/threads:{th}/real_time",
                              lambda a, b: lightning_numpy(q[:, a:b], k[:, a:b], v[:, a:b], slopes[a:b], scale)),
        "scalar gate forward": ("BM_ScalarGateForward/H:{H}/T:{T}/threads:{th}/real_time",
                                lambda a, b: scalar_gate_numpy(q[:, a:b], k[:, a:b], v[:, a:b], g_s[:, a:b], scale)),
        "vector gate forward": ("BM_VectorGateForward/H:{H}/T:{T}/threads:{th}/real_time",
                                lambda a, b: vector_gate_numpy(q[:, a:b], k[:, a:b], v[:, a:b], g_v[:, a:b], scale)),
        "cosFormer causal fwd": ("BM_CosformerForward/H:{H}/T:{T}/causal:1/threads:{th}/real_time",
                                 lambda a, b: cosformer_numpy(q[:, a:b], k[:, a:b], v[:, a:b])),
    }
    for op, (name, peer) in attention.items():
        rows.append((op, shape, name.format(H=H, T=T, th=th), "numpy", lambda peer=peer: peer(0, H),
                     lambda peer=peer: over_heads(peer, H, pool, th)))
    xs = {n: rng.standard_normal((n, Cch)).astype(np.float32) for n in ns}
    coeffs = rng.standard_normal((Cch, 2 * max(ns) - 1)).astype(np.float32)  # prefixes serve every shape
    for causal in (1, 0):
        for n in ns:
            a = np.ascontiguousarray(coeffs[:, :n if causal else 2 * n - 1])
            op = f"Toeplitz {'causal' if causal else 'bidir'} fwd"
            name = f"BM_ToeplitzForward/C:{Cch}/n:{n}/causal:{causal}/threads:{th}/real_time"
            rows.append((op, f"C={Cch} n={n}", name, "scipy fftconvolve",
                         lambda x=xs[n], a=a: toeplitz_fftconvolve(x, a), None))
            rows.append((op, f"C={Cch} n={n}", name, "scipy.fft rfft/irfft",
                         lambda x=xs[n], a=a: toeplitz_rfft(x, a), None))

    ours = run_lcsm(sorted({r[2] for r in rows}), 0.2 if ARGS.quick else 1.0)
    results = []
    blas = ", ".join(f"{i['internal_api']} {i['num_threads']}" for i in threadpoolctl.threadpool_info()
                     if i["user_api"] == "blas") or "none found"
    print(f"lcsm CPU peers: numpy {np.__version__}, scipy {scipy.__version__}, {th} threads "
          f"(OMP/OPENBLAS/MKL_NUM_THREADS={th}; BLAS threads: {blas}), float32, B = 1, K = V = {K}, chunk {C}")
    print("peer self-check, rel. RMS vs float64: " + ", ".join(f"{n} {e:.1e}" for n, e in checks.items()))
    absent = []
    for op, shp, lname, peer, fn, by_heads in rows:
        if lname not in ours:
            absent.append(f"{op} {shp} ({lname})")
            continue
        print(f"timing {peer} for {op} {shp} ...", file=sys.stderr, flush=True)
        theirs, threads = best_median_ms(fn, by_heads, ARGS.repeats, pool)
        results.append({"operator": op, "shape": shp, "lcsm_ms": ours[lname], "peer": peer, "peer_ms": theirs,
                        "peer_threads": threads, "ratio": theirs / ours[lname]})
    # Where several peers compute one case (Toeplitz), the fastest is the comparison to quote.
    for r in results:
        r["best_peer"] = r["peer_ms"] == min(o["peer_ms"] for o in results
                                             if (o["operator"], o["shape"]) == (r["operator"], r["shape"]))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other processes skew both sides)")
    print(f"\n{'operator':22} {'shape':16} {'lcsm ms':>9} {'peer':24} {'thr':>3} {'peer ms':>9} {'peer/lcsm':>9}")
    for r in results:
        peer = r["peer"] + (" *" if r["best_peer"] else "")
        print(f"{r['operator']:22} {r['shape']:16} {r['lcsm_ms']:9.2f} {peer:24} {r['peer_threads']:>3} "
              f"{r['peer_ms']:9.2f} {r['ratio']:9.2f}")
    print(f"lcsm: {th} threads; thr: the peer's fastest threads (h: Python threads over the heads); "
          "* the fastest peer of its case; "
          "peer/lcsm > 1: lcsm is faster")
    for a in absent:
        print(f"absent from {os.path.basename(ARGS.bench)}, skipped: {a}")
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump({"threads": th, "numpy": np.__version__, "scipy": scipy.__version__, "self_check": checks,
                       "results": results, "absent": absent}, f, indent=1)


if __name__ == "__main__":
    main()
