#!/usr/bin/env python3
"""Independent evaluation of Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307
(2014), main-text Eqs. (1)-(5), written from the paper (not from the Go code),
for the test vectors in lim2014_vectors.json.

System model of the paper's Sec. IV (dedicated fibre): mu3 = 2e-4,
eta_Bob = 0.1, p_dc = 6e-7, p_ap = 4e-2, 0.2 dB/km, e_mis = 5e-3, f_EC = 1.16,
eps_cor = 1e-15. Expected counts for block size n_X; fixed (not optimised)
protocol parameters; eps_sec fixed per vector. The misalignment term uses
eta_sys (see lim_test.go). Run: python3 lim2014_vectors.py > lim2014_vectors.json
"""
import json, math

def h(x):
    if x <= 0 or x >= 1: return 0.0
    return -x*math.log2(x) - (1-x)*math.log2(1-x)

def point(L, nX, mu1, mu2, p1, p2, qx, eps_sec):
    mu = [mu1, mu2, 2e-4]; p = [p1, p2, 1-p1-p2]
    eta = 0.1 * 10**(-0.2*L/10)
    R = []; E = []
    for k in mu:
        D = 1 - (1-2*6e-7)*math.exp(-eta*k)
        R.append(D*(1+4e-2)); E.append(6e-7 + 5e-3*(1-math.exp(-eta*k)) + 4e-2*D/2)
    rtot = sum(pk*rk for pk, rk in zip(p, R))
    N = nX/(qx*qx*rtot)
    nx = [N*qx*qx*pk*rk for pk, rk in zip(p, R)]
    nz = [N*(1-qx)**2*pk*rk for pk, rk in zip(p, R)]
    mz = [N*(1-qx)**2*pk*ek for pk, ek in zip(p, E)]
    mx = sum(N*qx*qx*pk*ek for pk, ek in zip(p, E))
    ln = math.log(21/eps_sec)
    tau = lambda n: sum(pk*math.exp(-k)*k**n/math.factorial(n) for pk, k in zip(p, mu))
    t0, t1 = tau(0), tau(1)
    def pm(counts, i, sign):
        d = math.sqrt(sum(counts)/2*ln)
        return math.exp(mu[i])/p[i]*(counts[i] + sign*d)
    def s01(c):
        s0 = max(t0*(mu[1]*pm(c, 2, -1) - mu[2]*pm(c, 1, +1))/(mu[1]-mu[2]), 0)
        s1 = t1*mu[0]*(pm(c, 1, -1) - pm(c, 2, +1) - (mu[1]**2-mu[2]**2)/mu[0]**2*(pm(c, 0, +1) - s0/t0)) \
            / (mu[0]*(mu[1]-mu[2]) - mu[1]**2 + mu[2]**2)
        return s0, max(s1, 0)
    sx0, sx1 = s01(nx)
    sz0, sz1 = s01(nz)
    vz1 = max(t1*(pm(mz, 1, +1) - pm(mz, 2, -1))/(mu[1]-mu[2]), 0)
    b = max(vz1/sz1, 1/sz1)
    c, d = sz1, sx1
    g = math.sqrt((c+d)*(1-b)*b/(c*d*math.log(2)) * math.log2((c+d)/(c*d*(1-b)*b) * 21**2/eps_sec**2))
    phi = min(vz1/sz1 + g, 0.5)
    leak = 1.16*nX*h(mx/nX) + math.log2(2/1e-15)
    ell = sx0 + sx1*(1-h(phi)) - leak - 6*math.log2(21/eps_sec)
    return dict(L=L, block=nX, mu1=mu1, mu2=mu2, p1=p1, p2=p2, qx=qx, eps_sec=eps_sec,
                NX=nx, NZ=nz, MZ=mz, leak=leak,
                sX0=sx0, sX1=sx1, sZ0=sz0, sZ1=sz1, vZ1=vz1, phiX=phi, ell=math.floor(ell) if ell > 0 else 0)

vecs = [point(*a) for a in [
    (0, 1e6, 0.45, 0.21, 0.20, 0.55, 0.78, 1e-10),
    (50, 1e7, 0.42, 0.21, 0.38, 0.45, 0.86, 1e-10),
    (100, 1e8, 0.42, 0.20, 0.60, 0.27, 0.90, 1e-9),
    (100, 1e9, 0.44, 0.17, 0.76, 0.16, 0.93, 1e-6),
    (150, 1e9, 0.43, 0.16, 0.76, 0.15, 0.91, 1e-10),
    (25, 1e5, 0.47, 0.17, 0.10, 0.56, 0.66, 1e-10),
]]
print(json.dumps({"source": "independent Python evaluation of Lim et al. PRA 89, 022307 (2014) Eqs. (1)-(5) (testdata/lim2014_vectors.py); not published numbers", "vectors": vecs}, indent=1))
