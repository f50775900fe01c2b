#!/usr/bin/env python3
"""Tests of lcsm-ref, driven the way a port would use it: from Python with NumPy.

    lcsm_ref_test.py LCSM_REF PART WORKDIR      PART: roundtrip or bad_inputs

roundtrip: generate problems, load the .npy files with NumPy, evaluate lightning attention and the
Toeplitz convolution from the manifest's conventions in NumPy (a small "port") and check it passes;
perturbed outputs fail with exit status 1; 16-bit outputs (float16, bfloat16 bits as uint16,
bfloat16 values stored as float32) are judged against their floor; the default conformance set
generates and its references, written back as a port's outputs, pass `check` on the batch directory.
bad_inputs: every bad descriptor, file or manifest gets exit status 2 and one line on stderr.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

TOOL, PART, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
results = {"passed": 0, "failed": 0}


def lcsm_ref(*args):
    p = subprocess.run([TOOL, *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def expect(cond, what):
    results["passed" if cond else "failed"] += 1
    print(("ok   " if cond else "FAIL ") + what)


def generate(name, *descriptor):
    d = os.path.join(WORK, name)
    rc, out, err = lcsm_ref("generate", d, *descriptor)
    if rc != 0:
        raise SystemExit(f"generate {' '.join(descriptor)} failed ({rc}): {err}")
    with open(os.path.join(d, "manifest.json")) as f:
        return d, json.load(f)


def load_inputs(d, manifest):
    arrays = {}
    for t in manifest["inputs"]:
        a = np.load(os.path.join(d, t["file"]))
        expect(list(a.shape) == t["shape"] and a.dtype.str == t["npy_descr"],
               f"{os.path.basename(d)}: input {t['name']} loads as {a.dtype.str} {list(a.shape)}")
        arrays[t["name"]] = a
    return arrays


def reference(d, manifest, name):
    o = next(o for o in manifest["outputs"] if o["name"] == name)
    return np.load(os.path.join(d, o["reference"]))


def save_output(d, name, array):
    os.makedirs(os.path.join(d, "output"), exist_ok=True)
    np.save(os.path.join(d, "output", name + ".npy"), array)


def bf16_bits(x):
    """float values -> bfloat16 bit patterns (round to nearest even), as uint16."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def numpy_lightning(i, scale):
    """The manifest's recurrence: S_t = exp(g_h) S_{t-1} + k_t v_t^T, o_t = scale S_t^T q_t, per sequence."""
    q, k, v, g = (i[n].astype(np.float64) for n in ("q", "k", "v", "log_decay"))
    B, T, H, K = q.shape
    V = v.shape[3]
    if "cu_seqlens" in i:
        cu = i["cu_seqlens"]
        seqs = [(0, int(cu[n]), int(cu[n + 1])) for n in range(len(cu) - 1)]
    else:
        seqs = [(b, 0, T) for b in range(B)]
    o = np.zeros((B, T, H, V))
    final = np.zeros((len(seqs), H, K, V))
    for n, (b, start, end) in enumerate(seqs):
        for h in range(H):
            S = i["initial_state"][n, h].astype(np.float64) if "initial_state" in i else np.zeros((K, V))
            for t in range(start, end):
                S = np.exp(g[h]) * S + np.outer(k[b, t, h], v[b, t, h])
                o[b, t, h] = scale * S.T @ q[b, t, h]
            final[n, h] = S
    return o, final


def roundtrip():
    # A NumPy port of lightning attention, varlen with states, checked and then perturbed.
    d, m = generate("lightning", "op=lightning", "dir=fwd", "varlen=3,70,0,40", "H=2", "K=16", "V=8",
                    "decay=strong", "state=1", "seed=5")
    i = load_inputs(d, m)
    scale = 1 / np.sqrt(16)
    expect(m["conventions"]["scale"].startswith(repr(0.25)), "manifest states the scale 1/sqrt(K)")
    o, final = numpy_lightning(i, scale)
    expect(np.allclose(o, reference(d, m, "o"), rtol=0, atol=1e-12),
           "NumPy recurrence from the manifest's conventions equals the float64 reference o")
    expect(np.allclose(final, reference(d, m, "final_state"), rtol=0, atol=1e-12), "... and the final state")
    save_output(d, "o", o.astype(np.float32))
    save_output(d, "final_state", final.astype(np.float32))
    rc, out, err = lcsm_ref("check", d)
    expect(rc == 0 and out.count("pass") >= 3, f"check of the float32 port passes (exit {rc})")
    noisy = o * (1 + 1e-3 * np.random.default_rng(0).standard_normal(o.shape))
    save_output(d, "o", noisy.astype(np.float32))
    rc, out, err = lcsm_ref("check", d)
    expect(rc == 1 and "FAIL" in out, f"a perturbed o fails with exit 1 (exit {rc})")
    one = o.astype(np.float32).copy()
    one[0, 5, 1, 3] += 1.0  # one element off: the max-abs bound catches what the RMS might not
    rc, out, _ = lcsm_ref("check", d, f"o={os.path.join(WORK, 'one.npy')}") if np.save(os.path.join(WORK, "one.npy"), one) is None else (0, "", "")
    expect(rc == 1, f"one element off by 1 fails (exit {rc})")
    nan = o.astype(np.float32).copy()
    nan[0, 7, 0, 0] = np.nan
    np.save(os.path.join(WORK, "o.npy"), nan)
    rc, out, _ = lcsm_ref("check", d, os.path.join(WORK, "o.npy"))
    expect(rc == 1 and "NaN" in out, f"a NaN fails (exit {rc})")

    # 16-bit outputs: the reference rounded to the dtype sits exactly on the floor (ratio 1.00).
    d, m = generate("bf16", "op=lightning", "T=100", "H=2", "K=32", "V=32", "dtype=bf16", "seed=2")
    ref = reference(d, m, "o")
    expect(np.load(os.path.join(d, "inputs", "q.npy")).dtype == np.uint16, "bf16 inputs are uint16 bit patterns")
    np.save(os.path.join(WORK, "o_bits.npy"), bf16_bits(ref))
    rc, out, _ = lcsm_ref("check", d, "o=" + os.path.join(WORK, "o_bits.npy"))
    expect(rc == 0 and " 1.00 " in out, f"bf16 bits at the floor pass, ratio 1.00 (exit {rc})")
    as_f32 = (bf16_bits(ref).astype(np.uint32) << 16).view(np.float32)
    np.save(os.path.join(WORK, "o_f32.npy"), as_f32)
    rc, out, _ = lcsm_ref("check", d, "o=" + os.path.join(WORK, "o_f32.npy"))
    expect(rc == 0, f"bf16 values stored as float32 pass (exit {rc})")
    worse = bf16_bits(ref * (1 + 4e-3 * np.random.default_rng(1).standard_normal(ref.shape)))
    np.save(os.path.join(WORK, "o_bits.npy"), worse)
    rc, out, _ = lcsm_ref("check", d, "o=" + os.path.join(WORK, "o_bits.npy"))
    expect(rc == 1, f"bf16 twice the floor fails (exit {rc})")
    d, m = generate("f16", "op=vector_gate", "T=70", "H=2", "K=16", "V=16", "dtype=f16", "decay=weak", "state=1")
    save_output(d, "o", reference(d, m, "o").astype(np.float16))
    rc, out, _ = lcsm_ref("check", d)
    expect(rc == 0 and "float16" in out and "final_state: not given" in out,
           f"float16 output passes; a missing output is reported, not failed (exit {rc})")

    # A NumPy port of the bidirectional Toeplitz convolution.
    d, m = generate("toeplitz", "op=toeplitz", "B=2", "T=40", "C=3", "causal=0", "dtype=f64")
    i = load_inputs(d, m)
    x, a = i["x"], i["coefficients"]
    n = x.shape[1]
    y = np.zeros_like(x)
    for t in range(n):
        for s in range(n):
            y[:, t, :] += a[:, t - s + n - 1] * x[:, s, :]
    expect(np.allclose(y, reference(d, m, "y"), rtol=0, atol=1e-12), "NumPy Toeplitz sums equal the reference y")
    save_output(d, "y", y)
    rc, out, _ = lcsm_ref("check", d)
    expect(rc == 0, f"check of the float64 Toeplitz port passes (exit {rc})")

    # The default conformance set: every line generates; its references, written back in each
    # output's dtype as a port's outputs, pass check on the batch directory.
    batch = os.path.join(WORK, "conformance")
    rc, out, err = lcsm_ref("generate", batch, "--batch", os.path.join(ROOT, "tools", "conformance.txt"))
    expect(rc == 0, f"the conformance set generates (exit {rc}) {err.strip()}")
    with open(os.path.join(batch, "index.json")) as f:
        cases = json.load(f)["cases"]
    for c in cases:
        cd = os.path.join(batch, c["dir"])
        with open(os.path.join(cd, "manifest.json")) as f:
            cm = json.load(f)
        for o in cm["outputs"]:
            r = np.load(os.path.join(cd, o["reference"]))
            kind = o["judged_as"]
            save_output(cd, o["name"], bf16_bits(r) if kind == "bfloat16" else r.astype(
                {"float64": np.float64, "float32": np.float32, "float16": np.float16}[kind]))
    rc, out, _ = lcsm_ref("check", batch)
    expect(rc == 0 and f"{len(cases)} passed, 0 failed" in out,
           f"check of the whole batch passes: {out.strip().splitlines()[-1]}")


def bad_inputs():
    d, _ = generate("good", "op=lightning", "T=10", "H=1", "K=4", "V=4")
    w = lambda name: os.path.join(WORK, name)
    np.save(w("o_shape.npy"), np.zeros((1, 10, 1, 5), np.float32))
    np.save(w("o_int.npy"), np.zeros((1, 10, 1, 4), np.int64))
    np.save(w("o_i32.npy"), np.zeros((1, 10, 1, 4), np.int32))
    np.save(w("o_fortran.npy"), np.asfortranarray(np.zeros((1, 10, 1, 4), np.float32)))
    np.save(w("o_big.npy"), np.zeros((1, 10, 1, 4), ">f4"))
    with open(w("o_garbage.npy"), "wb") as f:
        f.write(b"this is not an array")
    np.save(w("o_trunc.npy"), np.zeros((1, 10, 1, 4), np.float32))
    with open(w("o_trunc.npy"), "r+b") as f:
        f.truncate(os.path.getsize(w("o_trunc.npy")) - 7)
    with open(w("batch.txt"), "w") as f:
        f.write("# a comment\nop=lightning T=4\n\nop=lightning T=-3\n")
    with open(w("empty.txt"), "w") as f:
        f.write("# nothing\n")
    broken = os.path.join(WORK, "broken")
    shutil.copytree(d, broken, dirs_exist_ok=True)
    with open(os.path.join(broken, "manifest.json"), "w") as f:
        f.write("{ not json")
    norefs = os.path.join(WORK, "norefs")
    shutil.copytree(d, norefs, dirs_exist_ok=True)
    os.remove(os.path.join(norefs, "reference", "o.npy"))
    g = w("gen")
    cases = [
        (["generate", g, "op=foo"], "key 'op': expected one of"),
        (["generate", g, "T=5"], "no operator"),
        (["generate", g, "op=lightning", "T=abc"], "key 'T': expected an integer >= 0, got 'abc'"),
        (["generate", g, "op=lightning", "K=0"], "key 'K': expected an integer >= 1, got '0'"),
        (["generate", g, "op=lightning", "T=99999999999999999999"], "key 'T'"),
        (["generate", g, "op=lightning", "C=4"], "key 'C' does not apply to op=lightning"),
        (["generate", g, "op=lightning", "oops"], "expected key=value, got 'oops'"),
        (["generate", g, "op=lightning", "bar=1"], "unknown key 'bar'"),
        (["generate", g, "op=lightning", "T=1", "T=2"], "key 'T' given twice"),
        (["generate", g, "op=lightning", "decay=weird"], "key 'decay': expected one of"),
        (["generate", g, "op=cosformer", "decay=weak"], "key 'decay' does not apply to op=cosformer"),
        (["generate", g, "op=lightning", "dtype=f8"], "key 'dtype'"),
        (["generate", g, "op=lightning", "state=2"], "key 'state': expected 0 or 1"),
        (["generate", g, "op=lightning", "dir=step", "T=0"], "needs T >= 1"),
        (["generate", g, "op=lightning", "varlen=1,x"], "key 'varlen'"),
        (["generate", g, "op=lightning", "varlen=3,4", "T=5"], "varlen lengths sum to 7"),
        (["generate", g, "op=lightning", "varlen=3,4", "B=2"], "varlen packs the sequences into B = 1"),
        (["generate", g, "op=lightning", "dir=step", "varlen=3,4"], "decode (dir=step)"),
        (["generate", g, "op=cosformer", "T=10", "M=5"], "key 'M': expected M >= pos + the longest"),
        (["generate", g, "op=toeplitz", "dir=step", "causal=0"], "causal only"),
        (["generate", g, "op=toeplitz", "state=1"], "key 'state' does not apply"),
        (["generate", g, "op=lightning", "T=100000000", "H=16", "K=128"], "problem too large"),
        (["generate", g, "--batch", w("missing.txt")], "cannot open the batch file"),
        (["generate", g, "--batch", w("batch.txt")], "batch.txt:4: key 'T': expected an integer >= 0, got '-3'"),
        (["generate", g, "--batch", w("empty.txt")], "no descriptors"),
        (["generate", g, "--batch", w("batch.txt"), "op=lightning"], "not both"),
        (["generate", g], "no problem"),
        (["generate"], "dir is required"),
        (["frobnicate"], "frobnicate"),
        (["run", "op=lightning", "--threads", "0"], "--threads"),
        (["run", "op=lightning", "--device", "gpu"], "--device"),
        (["check", w("nowhere")], "manifest.json: cannot open"),
        (["check", broken], "malformed manifest"),
        (["check", norefs], "reference/o.npy: cannot open"),
        (["check", d], "no outputs to check"),
        (["check", d, "o=" + w("o_shape.npy")], "expected shape [1, 10, 1, 4] [B, T, H, V], got [1, 10, 1, 5]"),
        (["check", d, "o=" + w("o_int.npy")], "must be floating point"),
        (["check", d, "o=" + w("o_i32.npy")], "unsupported element type '<i4'"),
        (["check", d, "o=" + w("o_fortran.npy")], "Fortran-ordered"),
        (["check", d, "o=" + w("o_big.npy")], "big-endian"),
        (["check", d, "o=" + w("o_garbage.npy")], "not a .npy file"),
        (["check", d, "o=" + w("o_trunc.npy")], "truncated"),
        (["check", d, "o=" + w("absent.npy")], "absent.npy: cannot open"),
        (["check", d, w("o_shape.npy")], "'o_shape' is not an output of this problem (outputs: o, final_state)"),
        (["check", d, "o=" + w("o_shape.npy"), "o=" + w("o_int.npy")], "output 'o' given twice"),
    ]
    for args, message in cases:
        rc, out, err = lcsm_ref(*args)
        lines = err.strip().splitlines()
        ok = rc == 2 and len(lines) == 1 and lines[0].startswith("lcsm-ref: error:") and message in lines[0]
        expect(ok, f"{' '.join(os.path.basename(a) if os.sep in a else a for a in args)} -> exit {rc}: "
                   f"{lines[0] if lines else '(no message)'}" + ("" if ok else f"  [wanted exit 2 and '{message}']"))

    # --device cuda: on a GPU (and a CUDA build) the problems run and pass; elsewhere one line that
    # says why (no device, or a build without CUDA), exit 2. What the CUDA backend lacks is named.
    rc, out, err = lcsm_ref("run", "--device", "cuda", "op=toeplitz", "T=40", "C=3", "dtype=bf16", "--repeat", "1")
    lines = err.strip().splitlines()
    no_gpu = rc == 2 and len(lines) == 1 and lines[0].startswith("lcsm-ref: error: --device cuda:")
    expect((rc == 0 and "1 passed" in out) or no_gpu,
           f"run --device cuda op=toeplitz -> exit {rc}: {lines[0] if lines else out.strip().splitlines()[-1]}")
    if not no_gpu:
        for args, message in [(["op=cosformer"], "cosFormer is not on the CUDA backend yet"),
                              (["op=lightning", "dir=bwd"], "backward of lightning is not on the CUDA backend yet"),
                              (["op=lightning", "dtype=f64"], "not f64")]:
            rc, out, err = lcsm_ref("run", "--device", "cuda", *args)
            lines = err.strip().splitlines()
            ok = rc == 2 and len(lines) == 1 and message in lines[0]
            expect(ok, f"run --device cuda {' '.join(args)} -> exit {rc}: {lines[0] if lines else '(no message)'}")


{"roundtrip": roundtrip, "bad_inputs": bad_inputs}[PART]()
print(f"{results['passed']} passed, {results['failed']} failed")
sys.exit(1 if results["failed"] else 0)
