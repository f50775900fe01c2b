# Host emulation (NumPy float32) of the vector gate's per-chunk cumulative log2-gates: worst relative
# error of the factors 2^(L_i - L_j) (j <= i, true exponent > -100) over 2000 chunks of 32 tokens with
# the suite's 'floor' gates (-1000 with probability 1/7, else U[-1, 0]). Run: python3 this_file.
import numpy as np
rng=np.random.default_rng(2)
f=np.float32
log2e=f(1.4426950408889634)
def bf16(x):
    a=np.array([x],dtype=np.float32).view(np.uint32)[0]
    a=(int(a) + 0x7FFF + ((int(a)>>16)&1)) & 0xFFFF0000
    return np.array([a],dtype=np.uint32).view(np.float32)[0]
worst={}
def upd(k,v): worst[k]=max(worst.get(k,0),v)
for trial in range(2000):
    C=32
    g=np.where(rng.integers(0,7,C)==0, -1000.0, rng.uniform(-1,0,C)).astype(np.float32)
    exact=np.cumsum(g.astype(np.float64))*1.4426950408889634
    hi=f(0);lo=f(0);H=[];L=[];LF=[]
    for x in g:
        xx=f(x*log2e); s=f(hi+xx); xp=f(s-hi); lo=f(lo+f(f(hi-f(s-xp))+f(xx-xp))); hi=s
        h2=f(hi+lo); l2=f(lo-f(h2-hi)); H.append(h2); L.append(bf16(l2)); LF.append(l2)
    run=0.0; DH=[]; DL=[]
    for x in g:
        run+=float(x)*1.4426950408889634; h=f(run); DH.append(h); DL.append(bf16(f(run-float(h))))
    for i in range(C):
        for j in range(i+1):
            d=exact[i]-exact[j]
            if d < -100: continue
            ref=2.0**d
            t=2.0**float(f(H[i]-H[j]))*(1+float(f(L[i]-L[j]))*np.log(2)); upd('twosum_bf16lo',abs(t/ref-1))
            t=2.0**float(f(H[i]-H[j]))*(1+float(f(LF[i]-LF[j]))*np.log(2)); upd('twosum_f32lo',abs(t/ref-1))
            t=2.0**float(f(DH[i]-DH[j]))*(1+float(f(DL[i]-DL[j]))*np.log(2)); upd('double_bf16lo',abs(t/ref-1))
            # reference error from x rounding: exact uses float g times exact log2e
print(worst)
# Output (2026-12-02): {'twosum_bf16lo': 1.42e-06, 'twosum_f32lo': 9.77e-07, 'double_bf16lo': 1.44e-06}
# A plain float running sum: 2.4e-3.
