"""An independent safetensors implementation (json + numpy + h5py) for dtrainer's tests.

  write PATH                         a file with known tensors, in an order of its own
  check PATH                         checks the file test_safetensors.cpp writes
  check-export FILE CKPT KIND DTYPE  checks `dtckpt export` against the checkpoint's state.h5:
                                     names, shapes and order from meta.json's layout, values
                                     from units/<unit>/<KIND>, rounded to DTYPE (F32, BF16, F16)
Exits 0 when everything matches, 1 (with the reason) otherwise.
"""
import json
import struct
import sys

import numpy as np

NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
      "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def fail(msg):
    print("MISMATCH: " + msg)
    sys.exit(1)


def bf16_bits(x):
    """float32 -> bfloat16 bit patterns, round to nearest even (finite inputs)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def load(path):
    """(header dict without __metadata__, metadata, {name: numpy array}); BF16 as float32."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    spans = sorted((v["data_offsets"][0], v["data_offsets"][1], k) for k, v in header.items())
    at = 0
    for b, e, k in spans:
        if b != at:
            fail("tensor %s starts at %d, expected %d" % (k, b, at))
        at = e
    if at != len(data):
        fail("tensors cover %d bytes, data section has %d" % (at, len(data)))
    out = {}
    for k, v in header.items():
        b, e = v["data_offsets"]
        if v["dtype"] == "BF16":
            arr = bf16_to_f32(np.frombuffer(data[b:e], dtype="<u2"))
        else:
            arr = np.frombuffer(data[b:e], dtype=np.dtype(NP[v["dtype"]]).newbyteorder("<"))
        out[k] = arr.reshape(v["shape"])
    return header, meta, out, n


def write(path):
    tensors = [  # (name, dtype, array): deliberately not in name order
        ("c", "BF16", np.array([[1.0, -2.0], [0.5, 3.25]], dtype=np.float32)),
        ("b.weight", "F32", (np.arange(12, dtype=np.float32) * 0.5 - 1.0).reshape(3, 4)),
        ("idx", "I64", np.array([7, -1, 2 ** 40], dtype=np.int64)),
        ("a.bias", "F16", (np.arange(5) / 4.0).astype(np.float16)),
    ]
    header, blobs, at = {"__metadata__": {"origin": "numpy"}}, [], 0
    for name, dt, arr in tensors:
        blob = bf16_bits(arr).astype("<u2").tobytes() if dt == "BF16" else arr.astype(np.dtype(NP[dt]).newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [at, at + len(blob)]}
        blobs.append(blob)
        at += len(blob)
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def check(path):
    header, meta, t, n = load(path)
    if (8 + n) % 8:
        fail("data section does not start 8-byte aligned")
    if meta != {"producer": "test", "note": "x y"}:
        fail("metadata %r" % meta)
    want = {
        "w": ("F32", np.arange(6, dtype=np.float32).reshape(2, 3) / 3.0),
        "h": ("F16", np.array([0.1, -0.7, 1.0 / 3.0, 65504.0], dtype=np.float32).astype(np.float16).astype(np.float32)),
        "bf": ("BF16", bf16_to_f32(bf16_bits(np.array([1.0 / 3.0, -7.1, 1e-3], dtype=np.float32)))),
        "scalar": ("F32", np.array(2.5, dtype=np.float32)),
        "n": ("I64", np.array([-3, 1 << 33], dtype=np.int64)),
    }
    if list(header) != list(want):
        fail("tensors %s, expected %s in that order" % (list(header), list(want)))
    for k, (dt, arr) in want.items():
        if header[k]["dtype"] != dt or list(header[k]["shape"]) != list(arr.shape):
            fail("%s: %s %s" % (k, header[k]["dtype"], header[k]["shape"]))
        if not np.array_equal(t[k].astype(arr.dtype), arr):
            fail("%s: %s != %s" % (k, t[k], arr))


def check_export(path, ckpt, kind, dtype):
    import h5py
    header, meta, t, _ = load(path)
    layout = json.load(open(ckpt + "/meta.json"))["layout"]
    names = [name for unit in layout for name, _ in unit["tensors"]]
    if sorted(header, key=lambda k: header[k]["data_offsets"][0]) != names:
        fail("tensor names or order differ from the checkpoint's layout")
    if meta.get("weights") != kind:
        fail("metadata weights=%r, expected %r" % (meta.get("weights"), kind))
    with h5py.File(ckpt + "/state.h5", "r") as f:
        for unit in layout:
            flat = f["units/%s/%s" % (unit["unit"], kind)][...].astype(np.float32)
            at = 0
            for name, shape in unit["tensors"]:
                size = int(np.prod(shape)) if shape else 1
                ref = flat[at:at + size].reshape(shape)
                at += size
                if dtype == "BF16":
                    ref = bf16_to_f32(bf16_bits(ref))
                elif dtype == "F16":
                    ref = ref.astype(np.float16).astype(np.float32)
                if header[name]["dtype"] != dtype or list(header[name]["shape"]) != list(shape):
                    fail("%s: %s %s, expected %s %s" % (name, header[name]["dtype"], header[name]["shape"], dtype, shape))
                if not np.array_equal(t[name].astype(np.float32), ref):
                    fail("%s: values differ from units/%s/%s" % (name, unit["unit"], kind))
            if at != flat.size:
                fail("unit %s: layout covers %d of %d elements" % (unit["unit"], at, flat.size))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "write":
        write(sys.argv[2])
    elif cmd == "check":
        check(sys.argv[2])
    elif cmd == "check-export":
        check_export(*sys.argv[2:6])
    else:
        fail("unknown command " + cmd)
    print("OK")
