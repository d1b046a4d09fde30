"""An independent numpy reimplementation of EDM2's post-hoc EMA, for dtrainer's tests.

Written from the paper's equations (Karras et al. 2024, Sec. 3 and the appendix), not from any code:
  profile      p_t(tau) = (g + 1) tau^g / t^(g + 1) on [0, t]                      (eq. 121)
  width        sigma_rel^2 = (g + 1) / ((g + 2)^2 (g + 3)), so g is the largest real root
               of g^3 + 7 g^2 + (16 - s^-2) g + (12 - s^-2) = 0                   (eq. 123, 126)
  tracking     avg <- beta avg + (1 - beta) theta, beta = (1 - delta / t)^(g + 1)  (eq. 127)
  solve        the L2-best sum of snapshot profiles for the target profile: A w = b with
               A_ij = <p_i, p_j>, b_i = <p_i, p_target>, then w / sum(w)          (eq. 151)
The inner products are integrated here in log space (a different route from dtrainer's).

  synthetic IN.json     checks dtrainer's tracking and reconstruction of a synthetic trajectory
                        (test_power_ema.cpp writes IN.json): gammas, the snapshots against a
                        float64 tracking of the same trajectory, the reconstructions against
                        numpy's solve over the same snapshots (to 1e-6), and against the exact
                        target average.
  fill IN.safetensors OUT.safetensors NAME VALUE
                        a copy of a weights file with one tensor set to VALUE (test input).
  files ROOT AT SIGMA OUT.safetensors
                        checks `dtckpt phema`'s file: numpy's weights over the snapshots in ROOT
                        (read with h5py) up to AT images, summed, against OUT (to 1e-6).
Exits 0 when everything matches, 1 (printing the reason) otherwise.
"""
import json
import math
import os
import sys

import numpy as np


def fail(msg):
    print("MISMATCH: " + msg)
    sys.exit(1)


def gamma_of(sigma):
    x = sigma ** -2.0
    roots = np.roots([1.0, 7.0, 16.0 - x, 12.0 - x])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9))


def inner(ta, ga, tb, gb):
    m = min(ta, tb)
    log = (math.log(ga + 1) + math.log(gb + 1) + (ga + gb + 1) * math.log(m) - math.log(ga + gb + 1)
           - (ga + 1) * math.log(ta) - (gb + 1) * math.log(tb))
    return math.exp(log)


def weights(profiles, target):
    n = len(profiles)
    a = np.array([[inner(*profiles[i], *profiles[j]) for j in range(n)] for i in range(n)])
    b = np.array([inner(*profiles[i], *target) for i in range(n)])
    w = np.linalg.solve(a, b)
    return w / w.sum()


def close(name, got, want, tol):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = max(np.abs(want).max(), 1e-30)
    err = np.abs(got - want).max() / scale
    if not err <= tol:
        fail("%s: relative difference %.3g > %.1g" % (name, err, tol))
    return err


def synthetic(path):
    spec = json.load(open(path))
    batches, dim = spec["batches"], spec["dim"]
    t = np.cumsum(batches).astype(np.float64)

    def theta(n):  # the trajectory dtrainer's test follows (step n from 1)
        j = np.arange(dim, dtype=np.float64)
        return np.sin(0.37 * (j + 1) * n / len(batches)) + 0.1 * j - 0.02 * n

    for sigma, g in zip(spec["tracked"], spec["gammas"]):
        close("gamma of sigma_rel %g" % sigma, [g], [gamma_of(sigma)], 1e-9)
    # float64 tracking of every tracked profile, the snapshots taken where dtrainer took them
    tracked = {s: np.zeros(dim) for s in spec["tracked"]}
    want = {}
    for n in range(1, len(batches) + 1):
        for s in spec["tracked"]:
            beta = (1 - batches[n - 1] / t[n - 1]) ** (gamma_of(s) + 1)
            tracked[s] = beta * tracked[s] + (1 - beta) * theta(n)
        want[n] = {s: tracked[s].copy() for s in spec["tracked"]}
    snaps = spec["snapshots"]
    for sn in snaps:
        close("snapshot at step %d, sigma_rel %g" % (sn["step"], sn["sigma_rel"]), sn["values"],
              want[sn["step"]][sn["sigma_rel"]], 1e-5)  # (dtrainer tracks in fp32)
    profiles = [(sn["images"], gamma_of(sn["sigma_rel"])) for sn in snaps]
    values = np.array([sn["values"] for sn in snaps], dtype=np.float64)
    at = spec["at_images"]
    worst = 0.0
    for rec in spec["reconstructions"]:
        w = weights(profiles, (at, gamma_of(rec["sigma_rel"])))
        close("weights of sigma_rel %g" % rec["sigma_rel"], rec["weights"], w, 1e-6)
        close("reconstruction of sigma_rel %g" % rec["sigma_rel"], rec["values"], w @ values, 1e-6)
        # the exact average of that width, tracked directly: what the reconstruction approximates
        exact = np.zeros(dim)
        g = gamma_of(rec["sigma_rel"])
        for n in range(1, len(batches) + 1):
            if t[n - 1] > at:
                break
            beta = (1 - batches[n - 1] / t[n - 1]) ** (g + 1)
            exact = beta * exact + (1 - beta) * theta(n)
        worst = max(worst, close("reconstruction of sigma_rel %g against the exact average" % rec["sigma_rel"],
                                 rec["values"], exact, spec["exact_tolerance"]))
    print("ok: %d snapshots, %d reconstructions; worst distance from the exact average %.3g"
          % (len(snaps), len(spec["reconstructions"]), worst))


def files(root, at, sigma, out):
    import h5py
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from safetensors_reference import load
    snaps = []
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if name.startswith("img_") and os.path.exists(os.path.join(d, "COMPLETE")):
            meta = json.load(open(os.path.join(d, "meta.json")))
            if meta["images"] <= at:
                snaps.append((d, meta))
    if not snaps:
        fail("no snapshots up to %d images in %s" % (at, root))
    inputs, profiles = [], []
    for d, meta in snaps:
        for p in meta["profiles"]:
            inputs.append((d, p["name"]))
            profiles.append((float(meta["images"]), gamma_of(p["sigma_rel"])))
    w = weights(profiles, (float(at), gamma_of(sigma)))
    meta_last = snaps[-1][1]
    numel = {u["name"]: u["numel"] for u in meta_last["units"]}
    _, _, tensors, _ = load(out)
    files = {d: h5py.File(os.path.join(d, "state.h5"), "r") for d, _ in snaps}
    checked = 0
    for unit in meta_last["layout"]:  # [{"unit", "tensors": [[name, shape], ...]}], back to back
        total = np.zeros(numel[unit["unit"]])
        for (d, prof), wi in zip(inputs, w):
            total += wi * files[d]["units/%s/%s" % (unit["unit"], prof)][...].astype(np.float64)
        offset = 0
        for name, shape in unit["tensors"]:
            n = int(np.prod(shape)) if shape else 1
            want = total[offset:offset + n].reshape(shape)
            offset += n
            if name not in tensors:
                fail("%s: no tensor %s" % (out, name))
            close("%s in %s" % (name, out), tensors[name], want, 1e-6)
            checked += 1
    print("ok: %d tensors of %s from %d snapshot profiles" % (checked, out, len(inputs)))


def fill(src, dst, name, value):
    import struct
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from safetensors_reference import load
    header, meta, tensors, _ = load(src)
    if name not in tensors or header[name]["dtype"] != "F32":
        fail("%s: no F32 tensor %s" % (src, name))
    tensors[name] = np.full(tensors[name].shape, value, dtype=np.float32)
    out, data, at = {"__metadata__": meta}, b"", 0
    for key in sorted(header, key=lambda k: header[k]["data_offsets"][0]):
        raw = np.ascontiguousarray(tensors[key]).tobytes()
        out[key] = {"dtype": header[key]["dtype"], "shape": header[key]["shape"], "data_offsets": [at, at + len(raw)]}
        data += raw
        at += len(raw)
    blob = json.dumps(out).encode("utf-8")
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + data)
    print("ok: %s with %s = %g" % (dst, name, value))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "synthetic":
        synthetic(sys.argv[2])
    elif len(sys.argv) == 6 and sys.argv[1] == "fill":
        fill(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    elif len(sys.argv) == 6 and sys.argv[1] == "files":
        files(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
    else:
        print(__doc__)
        sys.exit(2)
