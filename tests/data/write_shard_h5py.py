#!/usr/bin/env python3
"""Independent shard writer for the tests: follows only data/README.md, using h5py and numpy.

usage: write_shard_h5py.py OUT_DIR MODE
  MODE valid: writes shard-a.h5 (float32 latents, float16 tokens) and shard-b.h5 (bfloat16 latents
              as uint16 + dtype attribute, float32 tokens, int32 offsets, no caption strings),
              and expected.json with the values the reader must return
  MODE empty: writes an otherwise well-formed shard with N = 0 images
"""
import json
import os
import sys

import h5py
import numpy as np

out, mode = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(7)


def bf16_bits(x):
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (uint16)."""
    b = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return b.astype(np.uint16)


def bf16_value(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def write(path, latents, captions, latent_kind, token_dtype, offset_dtype, with_text, D=16):
    cap_off, tok_off, toks, nouns, texts = [0], [0], [], [], []
    for caps in captions:
        for emb, n, text in caps:
            toks.append(emb)
            nouns.append(n)
            texts.append(text)
            tok_off.append(tok_off[-1] + emb.shape[0])
        cap_off.append(cap_off[-1] + len(caps))
    N = latents.shape[0]
    with h5py.File(path + ".tmp", "w") as f:
        f.attrs["schema_version"] = 1
        f.attrs["latent_space"] = "sdxl-vae"
        f.attrs["text_encoder"] = "independent-writer"
        f.attrs["text_dim"] = D
        f.attrs["max_tokens"] = 77
        if latent_kind == "bfloat16":
            f["latents"] = bf16_bits(latents)
            f["latents"].attrs["dtype"] = "bfloat16"
        else:
            f["latents"] = latents.astype(np.float32)
        f["tokens"] = np.concatenate(toks).astype(token_dtype) if toks else np.zeros((0, D), token_dtype)
        f["caption_offsets"] = np.array(cap_off, dtype=offset_dtype)
        f["token_offsets"] = np.array(tok_off, dtype=offset_dtype)
        f["caption_nouns"] = np.array(nouns, dtype=np.int32)
        f["original_size"] = np.tile(np.array([[256, 384]], dtype=np.int32), (N, 1))
        f["crop"] = np.tile(np.array([[3, 5]], dtype=np.int32), (N, 1))
        f["source"] = np.zeros(N, dtype=np.int32)
        f["source_names"] = np.array(["independent"], dtype=h5py.string_dtype())
        if with_text:
            f["captions"] = np.array(texts, dtype=h5py.string_dtype())
    os.replace(path + ".tmp", path)


def make(n_images, D):
    lat = rng.standard_normal((n_images, 4, 8, 8)).astype(np.float32)
    caps = []
    for i in range(n_images):
        caps.append([(rng.standard_normal((int(rng.integers(2, 20)), D)).astype(np.float32), int(rng.integers(0, 6)),
                      f"caption {i}.{k}") for k in range(1 + int(rng.integers(0, 4)))])
    return lat, caps


if mode == "empty":
    write(os.path.join(out, "empty.h5"), np.zeros((0, 4, 8, 8), np.float32), [], "float32", np.float16, np.int64, False)
    sys.exit(0)

D = 16
expected = {}
lat_a, caps_a = make(5, D)
write(os.path.join(out, "shard-a.h5"), lat_a, caps_a, "float32", np.float16, np.int64, True)
lat_b, caps_b = make(4, D)
write(os.path.join(out, "shard-b.h5"), lat_b, caps_b, "bfloat16", np.float32, np.int32, False)
for name, lat, caps, kind, tdt in [("shard-a.h5", lat_a, caps_a, "float32", np.float16),
                                   ("shard-b.h5", lat_b, caps_b, "bfloat16", np.float32)]:
    stored_lat = bf16_value(bf16_bits(lat)) if kind == "bfloat16" else lat
    expected[name] = {
        "images": len(caps),
        "captions_per_image": [len(c) for c in caps],
        "latents": stored_lat.astype(np.float64).ravel().tolist(),
        "tokens": [[emb.astype(tdt).astype(np.float64).ravel().tolist() for emb, _, _ in c] for c in caps],
        "nouns": [[n for _, n, _ in c] for c in caps],
        "texts": [[t for _, _, t in c] for c in caps] if name == "shard-a.h5" else [],
    }
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(expected, f)
