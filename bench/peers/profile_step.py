#!/usr/bin/env python3
"""Where a training step's time goes: lcsm's forward + backward under torch.profiler, per kernel.

Loads liblcsm_capi.so through gpu_peers.Lcsm and prints, per family and shape, each kernel's total
CUDA time over `--calls` steps (L2 flushed between them, as the benchmarks do) and its share.

    python3 bench/peers/profile_step.py --lib .device/liblcsm_capi.so --families lightning,scalar --T 65536
"""
import argparse
import math
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_peers import Lcsm, fla_gates, flush_l2, minimax_decay  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--families", default="lightning,scalar")
    ap.add_argument("--T", default="65536")
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--fast", action="store_true", help="the fast mode instead of the exact one")
    args = ap.parse_args()
    dev = torch.device("cuda")
    lc = Lcsm(args.lib)
    H, D = 16, 128
    scale = 1.0 / math.sqrt(D)
    exact = not args.fast
    for family in args.families.split(","):
        kind = {"lightning": 0, "scalar": 1, "vector": 2}[family]
        for T in (int(t) for t in args.T.split(",")):
            q, k, v, d_o = (torch.randn(1, T, H, D, device=dev, dtype=torch.bfloat16) for _ in range(4))
            if kind == 0:
                decay = minimax_decay(H).to(dev)
                _, fwd = lc.forward(q, k, v, decay, scale, exact=exact)
            else:
                decay = fla_gates((1, T, H) if kind == 1 else (1, T, H, D), dev)
                _, fwd = lc.gated_forward(kind - 1, q, k, v, decay, scale, exact=exact)
            *_, bwd, ws = lc.backward(kind, q, k, v, d_o, decay, scale, exact=exact)
            for _ in range(2):
                fwd()
                bwd()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(args.calls):
                    flush_l2()
                    fwd()
                    bwd()
                torch.cuda.synchronize()
            rows = {}
            for e in prof.key_averages():
                if e.device_type.name != "CUDA" or "zero_" in e.key or "fill" in e.key.lower():
                    continue
                t = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
                rows[e.key] = (t / args.calls / 1e3, e.count // args.calls)
            total = sum(t for t, _ in rows.values())
            mode = "exact" if exact else "fast"
            print(f"\n## {family} training step, T = {T}, {mode}: {total:.3f} ms of kernels a step "
                  f"(workspace {ws / 1e6:.0f} MB)")
            for name, (t, n) in sorted(rows.items(), key=lambda r: -r[1][0]):
                print(f"{t:8.3f} ms {100 * t / total:5.1f}% x{n:<3d} {name[:150]}")


if __name__ == "__main__":
    main()
