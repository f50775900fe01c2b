#!/usr/bin/env python3
"""Turns the benchmark JSON in docs/results/ into the PNG charts of docs/charts/.

    python3 scripts/charts.py [--cpu-bench FILE] [--cpu-lightning FILE] [--cpu-peers FILE]
                              [--gpu-peers FILE] [--out DIR]

Needs matplotlib (pip install matplotlib). Charts:
  cpu_time_vs_T.png    CPU forward time against T (log-log), H = 16, every attention operator, with
                       the memory floor (q, k, v read and o written once at the measured copy rate)
  cpu_toeplitz.png     CPU Toeplitz convolution forward and backward against n (C = 1024), same floor
  cpu_peers.png        CPU: NumPy / SciPy time over lcsm time, per operator (bars; > 1: lcsm faster)
  gpu_time_vs_T.png    H200 forward time against T: lcsm exact and fast, fla, SDPA, the memory floor
  gpu_peers.png        H200: fla / lcsm and SDPA / lcsm per shape (bars)
"""
import argparse
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results")
HEAD_DIM = 128
COLORS = {"lightning": "#1f77b4", "scalar gate": "#2ca02c", "vector gate": "#d62728",
          "cosFormer causal": "#9467bd", "cosFormer non-causal": "#8c564b", "floor": "#7f7f7f",
          "lcsm exact": "#1f77b4", "lcsm fast": "#17becf", "fla": "#ff7f0e", "SDPA": "#7f7f7f"}


def load(path):
    with open(path) as f:
        return json.load(f)


def iterations(bench):
    """Benchmark name -> best real time in seconds (the fastest repetition), and its counters."""
    out = {}
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    for b in bench["benchmarks"]:
        if b.get("run_type") != "iteration":
            continue
        t = b["real_time"] * scale[b["time_unit"]]
        if b["name"] not in out or t < out[b["name"]]["seconds"]:
            out[b["name"]] = dict(b, seconds=t)
    return out


def param(name, key):
    m = re.search(rf"/{key}:(\d+)", name)
    return int(m.group(1)) if m else None


def copy_rate(runs):
    """Bytes/s of the best 2-thread copy of the run (memcpy or streaming stores), as the benchmarks' frac_bw."""
    rates = [r["bytes_per_second"] for n, r in runs.items() if n.startswith("BM_MemCopy/kind:") and
             param(n, "threads") == 2 and param(n, "kind") in (0, 1)]
    return max(rates)


def style(ax, title, xlabel, ylabel):
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)


def pow2_labels(ax, values):
    ax.set_xticks(values)
    ax.set_xticklabels([f"{v // 1048576}M" if v >= 1048576 else f"{v // 1024}K" if v >= 1024 else str(v) for v in values])
    ax.minorticks_off()


def cpu_time_vs_T(bench, lightning_bench, out):
    runs, lruns = iterations(bench), iterations(lightning_bench)
    series = {
        "lightning": (lruns, r"BM_LightningForward/H:16/T:(\d+)/threads:2/"),
        "scalar gate": (runs, r"BM_ScalarGateForward/H:16/T:(\d+)/threads:2/"),
        "vector gate": (runs, r"BM_VectorGateForward/H:16/T:(\d+)/threads:2/"),
        "cosFormer causal": (runs, r"BM_CosformerForward/H:16/T:(\d+)/causal:1/threads:2/"),
        "cosFormer non-causal": (runs, r"BM_CosformerForward/H:16/T:(\d+)/causal:0/threads:2/"),
    }
    fig, ax = plt.subplots(figsize=(7.5, 5))
    Ts = set()
    for label, (source, pattern) in series.items():
        points = sorted((int(m.group(1)), r["seconds"]) for n, r in source.items() if (m := re.match(pattern, n)))
        if not points:
            continue
        Ts.update(t for t, _ in points)
        ax.loglog([t for t, _ in points], [s * 1e3 for _, s in points], "o-", label=label, color=COLORS[label])
    Ts = sorted(Ts)
    rate = copy_rate(runs)
    floor = [4 * t * 16 * HEAD_DIM * 4 / rate * 1e3 for t in Ts]  # q, k, v read, o written, float32
    ax.loglog(Ts, floor, "--", color=COLORS["floor"], label=f"memory floor (q, k, v, o once at {rate / 1e9:.0f} GB/s)")
    pow2_labels(ax, Ts)
    style(ax, "CPU forward, H = 16, K = V = 128, float32, 2 threads (2-core EPYC)", "T (tokens)", "time per call [ms]")
    ax.legend(fontsize=8.5, loc="upper left")
    fig.text(0.99, 0.01, "lightning: 2026-11-28 run; others: 2026-11-29 run (docs/results/)", ha="right",
             fontsize=7, color="#555555")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "cpu_time_vs_T.png"), dpi=110)
    plt.close(fig)


def cpu_toeplitz(bench, out):
    runs = iterations(bench)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ns = set()
    for label, pattern, color in [("forward, causal", r"BM_ToeplitzForward/C:1024/n:(\d+)/causal:1/threads:2/", "#1f77b4"),
                                  ("backward (dx, da), causal", r"BM_ToeplitzBackward/C:1024/n:(\d+)/causal:1/threads:2/", "#d62728"),
                                  ("forward, bidirectional", r"BM_ToeplitzForward/C:1024/n:(\d+)/causal:0/threads:2/", "#2ca02c")]:
        points = sorted((int(m.group(1)), r["seconds"]) for n, r in runs.items() if (m := re.match(pattern, n)))
        ns.update(n for n, _ in points)
        ax.loglog([n for n, _ in points], [s * 1e3 for _, s in points], "o-", label=label, color=color)
    ns = sorted(ns)
    rate = copy_rate(runs)
    ax.loglog(ns, [2 * n * 1024 * 4 / rate * 1e3 for n in ns], "--", color=COLORS["floor"],
              label=f"memory floor (x, y once at {rate / 1e9:.0f} GB/s)")
    pow2_labels(ax, ns)
    style(ax, "CPU Toeplitz convolution, C = 1024 channels, float32, 2 threads", "n (tokens)", "time per call [ms]")
    ax.legend(fontsize=8.5, loc="upper left")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "cpu_toeplitz.png"), dpi=110)
    plt.close(fig)


def ratio_bars(ax, labels, ratios, colors, log=False):
    bars = ax.barh(range(len(labels)), ratios, color=colors)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8.5)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=1)
    if log:
        ax.set_xscale("log")
    for bar, r in zip(bars, ratios):
        ax.text(bar.get_width() * (1.04 if log else 1.0) + (0 if log else 0.05), bar.get_y() + bar.get_height() / 2,
                f"{r:.2f}x" if r < 10 else f"{r:.0f}x", va="center", fontsize=8)
    ax.set_xlim(right=max(ratios) * (3 if log else 1.18))


def cpu_peers(peers, out):
    rows = peers["results"]
    labels = [f"{r['operator']}, {r['shape']}\nvs {r['peer']}" for r in rows]
    ratios = [r["peer_ms"] / r["lcsm_ms"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.4))
    ratio_bars(ax, labels, ratios, ["#1f77b4" if r["peer"] == "numpy" else "#2ca02c" for r in rows])
    style(ax, f"CPU: peer time / lcsm time (> 1: lcsm faster)\n{peers['threads']} threads, "
              f"numpy {peers['numpy']}, scipy {peers['scipy']}", "ratio", "")
    fig.text(0.99, 0.01, "peers timed one way (BLAS with 2 threads); docs/performance.md has the caveat", ha="right",
             fontsize=7, color="#555555")
    ax.grid(True, axis="x", alpha=0.35)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "cpu_peers.png"), dpi=110)
    plt.close(fig)


def gpu_time_vs_T(peers, out):
    rows = sorted((r for r in peers["rows"] if r["op"] == "forward" and r["B"] == 1), key=lambda r: r["T"])
    Ts = [r["T"] for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for label, key in [("lcsm exact", "lcsm_ms"), ("lcsm fast", "lcsm_fast_ms"), ("fla", "fla_ms"), ("SDPA", "sdpa_ms")]:
        ax.loglog(Ts, [r[key] for r in rows], "o-", label=label + (" chunk_simple_gla" if label == "fla" else
                                                                   " causal (FlashAttention)" if label == "SDPA" else ""),
                  color=COLORS[label])
    rate = peers["copy_tb_s"] * 1e12
    ax.loglog(Ts, [4 * t * 16 * HEAD_DIM * 2 / rate * 1e3 for t in Ts], "--", color="#444444",
              label=f"memory floor (q, k, v, o once at {peers['copy_tb_s']:.2f} TB/s)")
    pow2_labels(ax, Ts)
    style(ax, f"{peers['device']} forward, B = 1, H = 16, D = 128, bf16 ({peers['date']})", "T (tokens)",
          "time per call [ms]")
    ax.legend(fontsize=8.5, loc="upper left")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "gpu_time_vs_T.png"), dpi=110)
    plt.close(fig)


def gpu_peers(peers, out):
    rows = [r for r in peers["rows"] if r["op"] in ("forward", "decode")]
    tokens = lambda t: f"{t // 1048576}M" if t >= 1048576 else f"{t // 1024}K"
    name = lambda r: (f"forward B={r['B']} T={tokens(r['T'])}" if r["op"] == "forward" else f"decode B={r['B']}")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 0.5 * len(rows) + 1.8), gridspec_kw={"width_ratios": [1.2, 1]})
    labels, ratios, colors = [], [], []
    for r in rows:
        labels.append(name(r) + (" (exact)" if "lcsm_fast_ms" in r else ""))
        ratios.append(r["fla_ms"] / r["lcsm_ms"])
        colors.append(COLORS["lcsm exact"])
        if "lcsm_fast_ms" in r:
            labels.append(name(r) + " (fast)")
            ratios.append(r["fla_ms"] / r["lcsm_fast_ms"])
            colors.append(COLORS["lcsm fast"])
    ratio_bars(a1, labels, ratios, colors)
    style(a1, "fla time / lcsm time (> 1: lcsm faster)", "ratio", "")
    fw = [r for r in rows if r["op"] == "forward"]
    ratio_bars(a2, [name(r) for r in fw], [r["sdpa_ms"] / r["lcsm_ms"] for r in fw], [COLORS["SDPA"]] * len(fw),
               log=True)
    style(a2, "SDPA (softmax) time / lcsm exact time", "ratio (log)", "")
    fig.suptitle(f"{peers['device']}, bf16, H = 16, D = 128; torch {peers['torch']}, fla {peers['fla']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "gpu_peers.png"), dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu-bench", default=os.path.join(RESULTS, "2026-11-29-cpu", "bench.json"))
    p.add_argument("--cpu-lightning", default=os.path.join(RESULTS, "2026-11-28-cpu", "bench.json"),
                   help="a CPU run with lightning's T sweep")
    p.add_argument("--cpu-peers", default=os.path.join(RESULTS, "2026-11-29-cpu", "cpu_peers.json"))
    p.add_argument("--gpu-peers", default=os.path.join(RESULTS, "2026-11-28-h200-wgmma", "peers.json"))
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "charts"))
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    cpu_time_vs_T(load(a.cpu_bench), load(a.cpu_lightning), a.out)
    cpu_toeplitz(load(a.cpu_bench), a.out)
    cpu_peers(load(a.cpu_peers), a.out)
    gpu_time_vs_T(load(a.gpu_peers), a.out)
    gpu_peers(load(a.gpu_peers), a.out)
    print("charts written to", a.out)


if __name__ == "__main__":
    main()
