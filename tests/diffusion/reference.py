#!/usr/bin/env python3
"""Independent numpy reference for the diffusion tests. Prints one JSON object.

Written from the formulas (SPEC §3-4 and the cited papers), not from the C++ code:
schedules, zero-terminal SNR (Lin et al. 2024, Algorithm 1), [S2] Eq. 3 / Eq. 4, the power-cosine
gamma_c, and MAE-style 2-D sin-cos positional embeddings on [S2]'s resampled grid.
"""
import json
import numpy as np

T = 1000
probe = [0, 1, 10, 250, 500, 750, 998, 999]


def scaled_linear(b0=0.00085, b1=0.012):
    betas = np.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def linear(b0=0.0001, b1=0.02):
    return np.cumprod(1.0 - np.linspace(b0, b1, T, dtype=np.float64))


def cosine(s=0.008):
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
    i = np.arange(T, dtype=np.float64)
    betas = np.minimum(1 - f((i + 1) / T) / f(i / T), 0.999)
    return np.cumprod(1.0 - betas)


def zero_terminal(abar):
    # Lin et al., "Common Diffusion Noise Schedules and Sample Steps Are Flawed", Algorithm 1
    a = np.sqrt(abar)
    a0, aT = a[0].copy(), a[-1].copy()
    a = a - aT
    a = a * a0 / (a0 - aT)
    return a ** 2


def eq3(abar, s, s2):
    return s ** 2 * abar / (s2 ** 2 + abar * (s ** 2 - s2 ** 2))


def gamma_c(t, alpha):
    return (1 - np.cos(np.pi * (1 - t) ** alpha)) / 2


def pos_1d(dim, pos):
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def pos_2d(dim, h, w, scale, mode):
    if mode == "extrapolate":
        gh, gw = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    else:  # [S2]: base = grid_size / scale; linspace(0, base, grid_size)
        gh = np.linspace(0, h / scale, h)
        gw = np.linspace(0, w / scale, w)
    grid = np.meshgrid(gw, gh)  # MAE convention: w first, tokens row-major
    emb_w = pos_1d(dim // 2, grid[0])
    emb_h = pos_1d(dim // 2, grid[1])
    return np.concatenate([emb_w, emb_h], axis=1)


sl = scaled_linear()
out = {
    "probe": probe,
    "scaled_linear": sl[probe].tolist(),
    "linear": linear()[probe].tolist(),
    "cosine": cosine()[probe].tolist(),
    "zero_terminal": zero_terminal(sl)[probe].tolist(),
    "eq3_1_to_2": eq3(sl, 1.0, 2.0)[probe].tolist(),
    "eq3_2_to_1": eq3(sl, 2.0, 1.0)[probe].tolist(),
    "eq4": [1 + s * (lam - 1) for lam, s in [(1.5, 1.0), (1.5, 2.0), (7.5, 0.5), (3.0, 4.0)]],
    "gamma_t": [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0],
    "gamma_alpha8": gamma_c(np.array([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]), 8.0).tolist(),
    "gamma_alpha1": gamma_c(np.array([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]), 1.0).tolist(),
    "pos_resampled_s1": pos_2d(8, 3, 4, 1.0, "resampled").tolist(),
    "pos_resampled_s2": pos_2d(8, 6, 8, 2.0, "resampled").tolist(),
    "pos_extrapolate": pos_2d(8, 3, 4, 1.0, "extrapolate").tolist(),
}
print(json.dumps(out))
