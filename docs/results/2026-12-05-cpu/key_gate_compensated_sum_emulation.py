# Host emulation (NumPy float32) of the vector gate's per-chunk cumulative log2-gates as
# key_gate_cumulate computes them: compensated float (TwoProduct by FMA, TwoSum, normalised pair, lo
# rounded to bf16) against the double sum it replaces, both through the second-order exp2_pair (and
# the double sum through the old first-order one: the difference between those is exp2_pair's). Worst relative error of the factors
# 2^(L_i - L_j) (j <= i, true exponent > -100) over 2000 chunks of 32 tokens with the suite's 'floor'
# gates (-1000 with probability 1/7, else U[-1, 0]), and with gates of -1000 only (the contract's limit).
import numpy as np
from fractions import Fraction
rng = np.random.default_rng(2)
f = np.float32
L2E = 1.4426950408889634
HI, LO = f(1.4426950216293335), f(1.9259629911266175e-08)
def bf16(x):
    a = int(np.array([x], dtype=np.float32).view(np.uint32)[0])
    a = (a + 0x7FFF + ((a >> 16) & 1)) & 0xFFFF0000
    return np.array([a], dtype=np.uint32).view(np.float32)[0]
def fma(a, b, c):  # float fma: exact product and sum, one rounding
    return f(float(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))))
def pair(h, l, second):  # exp2_pair: second order as the kernel now evaluates it, or the old first order
    if second:
        return 2.0 ** float(h) * float(fma(l, fma(l, f(0.2402265069591007), f(0.6931471805599453)), f(1)))
    return 2.0 ** float(h) * float(fma(l, f(0.6931471805599453), f(1)))
def run(gen, trials=2000, C=32):
    worst = {}
    for _ in range(trials):
        g = gen(C).astype(np.float32)
        exact = np.cumsum(g.astype(np.float64)) * L2E
        hi = lo = f(0); H, Lb = [], []
        for x in g:
            p = f(x * HI); pe = f(fma(x, HI, -p) + f(x * LO))
            s = f(hi + p); b = f(s - hi); se = f(f(hi - f(s - b)) + f(p - b))
            hi = s; lo = f(lo + f(se + pe))
            h = f(hi + lo); l = f(lo - f(h - hi)); H.append(h); Lb.append(bf16(l))
        r = 0.0; DH, DL = [], []
        for x in g:
            r += float(x) * L2E; h = f(r); DH.append(h); DL.append(bf16(f(r - float(h))))
        for i in range(C):
            for j in range(i + 1):
                d = exact[i] - exact[j]
                if d < -100: continue
                ref = 2.0 ** d
                for name, A, B, sec in (('compensated_float', H, Lb, True), ('double', DH, DL, True),
                                        ('double_first_order', DH, DL, False)):
                    t = pair(f(A[i] - A[j]), f(B[i] - B[j]), sec)
                    worst[name] = max(worst.get(name, 0), abs(t / ref - 1))
    return {k: float('%.3g' % v) for k, v in worst.items()}
print('floor gates', run(lambda C: np.where(rng.integers(0, 7, C) == 0, -1000.0, rng.uniform(-1, 0, C)), 400))
print('gates at -1000 then weak', run(lambda C: np.where(np.arange(C) < 16, -1000.0, rng.uniform(-1e-3, 0, C)), 100))
print('weak gates', run(lambda C: rng.uniform(-1e-4, 0, C), 400))
