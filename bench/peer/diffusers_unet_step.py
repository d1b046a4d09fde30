"""The PyTorch-Python peer of `dtbench train`: one training step of diffusers' UNet2DConditionModel.

Builds the UNet that `dtmodel describe NAME --json` describes, checks that it has exactly as many
parameters as dtrainer's, and times the same step as `dtbench train` on the CPU: a forward at
B x 4 x L x L latents with B x 77 x context_dim text states, an MSE loss against a fixed random
target, backward, torch.optim.AdamW (lr 1e-4, betas 0.9/0.999, eps 1e-8, weight decay 0.03),
gradients set to None. fp32, eager mode. Prints one JSON line (the fields dtbench train --json
prints for the same quantities).

  DIFFUSERS_SRC=/path/to/diffusers/src /usr/bin/python3 bench/peer/diffusers_unet_step.py \
      --describe model.json --batch 2 --threads 1 [--steps 3 --warmup 1 --repeats 3]

DIFFUSERS_SRC is the `src` folder of a diffusers checkout (measured with v0.30.3 and v0.21.4; both
run on Debian bookworm's python3-torch 1.13):
  git clone https://github.com/huggingface/diffusers && git -C diffusers archive v0.30.3 src/diffusers | tar -x
diffusers imports huggingface_hub and safetensors at start-up; Debian packages neither and nothing
here uses them (no download, no file), so empty stand-ins are installed (the same ones the encoder
fixtures use: tests/models/fixtures/make_encoder_fixtures.py). Needs Debian's python3-torch,
python3-numpy, python3-packaging, python3-filelock, python3-requests, python3-importlib-metadata,
python3-pil, python3-regex, python3-tqdm.

The thread count is fixed before torch is imported (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS: OpenBLAS
sizes its pool when it loads) and again through torch.set_num_threads. OPENBLAS_CORETYPE, when set,
chooses OpenBLAS's kernels exactly as it does for dtrainer (bench/peer/side_by_side.sh passes the
kernels dtrainer runs with, so both sides multiply with the same code).
"""

import argparse
import json
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--describe", required=True, help="output of `dtmodel describe NAME --json` (a file)")
    p.add_argument("--batch", type=int, default=2, help="images per step")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (and OpenBLAS's pool)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--repeats", type=int, default=3, help="repeats of the timed steps (median reported)")
    p.add_argument("--profile", help="after the timed steps, one more under torch's profiler: its Chrome trace to "
                   "this file (as `dtbench train --profile`; bench/peer/op_table.py sums both per op)")
    return p.parse_args()


def unet_config(d):
    """diffusers' UNet2DConditionModel arguments for dtrainer's `dtmodel describe --json` fields."""
    f = d["fields"]
    if f["layout"] != "sd":
        sys.exit(f"diffusers_unet_step: layout '{f['layout']}' has no UNet2DConditionModel peer (only 'sd')")
    if f["num_classes"] != "0" or f["control_conditioning"] != "false":
        sys.exit("diffusers_unet_step: only text-conditioned UNets without control inputs have a peer here")
    c = int(f["model_channels"])
    mult = [int(m) for m in f["channel_mult"].split(",")]
    depth = [int(t) for t in f["transformer_depth"].split(",")]
    head_dim = int(f["head_dim"])
    channels = [c * m for m in mult]
    if f["mid_transformer_depth_resolved"] != depth[-1]:
        sys.exit("diffusers_unet_step: diffusers' mid block takes the last level's transformer depth; "
                 f"this model's is {f['mid_transformer_depth_resolved']} (last level {depth[-1]})")
    return dict(
        sample_size=int(f["sample_size"]),
        in_channels=int(f["in_channels"]),
        out_channels=int(f["out_channels"]),
        down_block_types=["CrossAttnDownBlock2D" if t > 0 else "DownBlock2D" for t in depth],
        up_block_types=["CrossAttnUpBlock2D" if t > 0 else "UpBlock2D" for t in reversed(depth)],
        block_out_channels=channels,
        layers_per_block=int(f["num_res_blocks"]),
        transformer_layers_per_block=[max(t, 1) for t in depth],
        # (diffusers' "attention_head_dim" is the number of heads per level, a historical name)
        attention_head_dim=[ch // head_dim for ch in channels],
        cross_attention_dim=int(f["context_dim"]),
        use_linear_projection=f["use_linear_projection"] == "true",
        norm_num_groups=int(f["norm_groups"]),
        time_embedding_dim=c * int(f["time_embed_mult"]),
    )


def blas_core():
    """The kernels OpenBLAS runs with (its own report), or '' when the BLAS is not OpenBLAS."""
    import ctypes
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return ""


def blas_library():
    """The OpenBLAS file this process loaded (from /proc/self/maps), or ''."""
    with open("/proc/self/maps") as fh:
        for line in fh:
            if "libopenblas" in line:
                return os.path.realpath(line.split()[-1])
    return ""


def main():
    a = parse_args()
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[v] = str(a.threads)
    src = os.environ.get("DIFFUSERS_SRC")
    if not src or not os.path.isdir(os.path.join(src, "diffusers")):
        sys.exit("diffusers_unet_step: set DIFFUSERS_SRC to the src folder of a diffusers checkout (see --help)")
    with open(a.describe) as fh:
        d = json.load(fh)

    sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "models", "fixtures"))
    from make_encoder_fixtures import install_stand_ins
    install_stand_ins("huggingface_hub", "huggingface_hub.constants", "huggingface_hub.utils",
                      "huggingface_hub.file_download", "safetensors", "safetensors.torch")
    sys.path.insert(0, src)
    import torch
    try:
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel  # >= 0.25
    except ImportError:
        from diffusers.models.unet_2d_condition import UNet2DConditionModel
    import diffusers

    torch.set_num_threads(a.threads)
    torch.manual_seed(1234)
    model = UNet2DConditionModel(**unet_config(d)).train()
    params = sum(p.numel() for p in model.parameters())
    if params != d["params"]:
        sys.exit(f"diffusers_unet_step: diffusers' UNet has {params} parameters, dtrainer's {d['params']}: "
                 "not the same model")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.03)

    B, (C, L, _) = a.batch, d["latent"]
    x = torch.randn(B, C, L, L)
    t = torch.rand(B) * 999.0
    text = torch.randn(B, d["text_len"], d["context_dim"])
    target = torch.randn(B, int(d["fields"]["out_channels"]), L, L)
    loss = None

    phase = [0.0, 0.0, 0.0]

    def step():
        nonlocal loss
        t0 = time.perf_counter()
        pred = model(x, t, encoder_hidden_states=text).sample
        loss = torch.nn.functional.mse_loss(pred, target)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        phase[0] += t1 - t0
        phase[1] += t2 - t1
        phase[2] += time.perf_counter() - t2

    for _ in range(a.warmup):
        step()
    times = []
    phase[:] = [0.0, 0.0, 0.0]
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        times.append((time.perf_counter() - t0) / a.steps)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    n = a.steps * a.repeats
    final_phase = list(phase)
    if a.profile:
        with torch.autograd.profiler.profile() as prof:
            step()
        prof.export_chrome_trace(a.profile)
    phase[:] = final_phase
    print(json.dumps({
        "implementation": f"diffusers {diffusers.__version__} on torch {torch.__version__} (Python, eager)",
        "params": params,
        "micro_batch": B,
        "latent_size": L,
        "threads": a.threads,
        "blas_core": blas_core(),
        "blas_library": blas_library(),
        "step_seconds": sorted(times)[len(times) // 2],
        "minor_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / n,
        "system_seconds_per_step": (r1.ru_stime - r0.ru_stime) / n,
        "forward_seconds": phase[0] / n,
        "backward_seconds": phase[1] / n,
        "optimizer_seconds": phase[2] / n,
        "final_loss": float(loss),
    }))


if __name__ == "__main__":
    main()
