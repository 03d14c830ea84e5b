"""Training and inference throughput of BPCLIP (JAX), and of the PyTorch peer TOPIQ (pyiqa's CFANet)
on the same device with the same batch and crop when torch and pyiqa are importable.

    python benchmarks/throughput.py [--mode fr|nr] [--batch 16] [--crop 384] [--dtype bfloat16]
        [--steps 20] [--out throughput.json] [--peer auto|yes|no]

Prints and writes JSON: steady-state train pairs/s (forward + backward + AdamW, after compilation),
inference images/s, compile time, peak device memory, XLA's FLOPs per train step and the achieved
TFLOP/s with its share of the device's peak (when the device is known), and peer/ratio figures.
Inputs are random and stay on the device: this measures the step, not the input pipeline
(benchmarks/input_pipeline.py measures that). Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "fr", ["fr", "nr"], "full-reference or no-reference model")
flags.DEFINE_integer("batch", 16, "global batch")
flags.DEFINE_integer("crop", 384, "square input size")
flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "compute dtype (params float32)")
flags.DEFINE_integer("steps", 20, "timed steps")
flags.DEFINE_integer("warmup", 3, "untimed steps after compilation")
flags.DEFINE_enum("peer", "auto", ["auto", "yes", "no"], "run pyiqa's CFANet too")
flags.DEFINE_string("out", "", "JSON output path")

# Dense bf16 peak TFLOP/s per device (vendor figures), for the share of peak.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def device_peak(device) -> float | None:
    name = getattr(device, "device_kind", "")
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def peak_memory(device) -> int | None:
    try:
        return (device.memory_stats() or {}).get("peak_bytes_in_use")
    except Exception:  # CPU devices have no memory stats
        return None


def _timed(fn, steps: int, warmup: int) -> float:
    """Seconds per call of fn (which returns something to block on), after warm-up."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    start = time.perf_counter()
    out = None
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps


def bench_jax(mode: str, batch: int, crop: int, dtype: str, steps: int, warmup: int) -> dict:
    from bpclip_jax import train
    from bpclip_jax.evaluate import forward_fn
    from bpclip_jax.models.build import create_model
    from configs import base

    config = base.get_config()
    config.model.pretrained = False
    config.model.full_reference = mode == "fr"
    model = create_model(config.model, dtype=dtype)
    tx, schedule = train.make_optimizer(config.optim, 1000)
    graphdef, state = train.create_train_state(model, tx)
    mesh = train.make_mesh()
    state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    rng = np.random.default_rng(0)
    batch_np = {"dist": rng.integers(0, 256, (batch, crop, crop, 3), dtype=np.uint8),
                "score": rng.uniform(0, 1, batch).astype(np.float32)}
    if mode == "fr":
        batch_np["ref"] = rng.integers(0, 256, (batch, crop, crop, 3), dtype=np.uint8)
    batch_dev = train.to_global(batch_np, mesh)
    step = train.compile_step(train.make_train_step(graphdef, tx, schedule, 0), mesh)

    start = time.perf_counter()
    compiled = step.lower(state, batch_dev).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0

    holder = {"state": state}

    def one_step():
        holder["state"], metrics = compiled(holder["state"], batch_dev)
        return metrics["loss"]

    train_s = _timed(one_step, steps, warmup)
    forward = forward_fn(graphdef)
    ref = batch_dev.get("ref")
    infer_s = _timed(lambda: forward(holder["state"].params, holder["state"].frozen,
                                     batch_dev["dist"], ref), steps, warmup)
    device = jax.devices()[0]
    peak = device_peak(device)
    achieved = flops / train_s / 1e12 if flops else None
    return {
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')} x{jax.device_count()}",
        "train_pairs_per_s": batch / train_s, "infer_images_per_s": batch / infer_s,
        "compile_s": compile_s, "flops_per_step": flops, "achieved_tflops": achieved,
        "share_of_peak": achieved / peak if (achieved and peak) else None,
        "peak_memory_bytes": peak_memory(device),
    }


def bench_peer(mode: str, batch: int, crop: int, dtype: str, steps: int, warmup: int) -> dict:
    """pyiqa's CFANet (TOPIQ) with its own best settings: channels-last, bf16 autocast on GPU."""
    import torch
    from pyiqa.archs.topiq_arch import CFANet

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    model = CFANet(pretrained=False, backbone_pretrain=False, use_ref=mode == "fr").to(dev)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                            weight_decay=1e-5)
    x = torch.rand(batch, 3, crop, crop, device=dev).to(memory_format=torch.channels_last)
    y = torch.rand_like(x) if mode == "fr" else None
    target = torch.rand(batch, device=dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda and dtype == "bfloat16")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.mse_loss(model(x, y).float().view(-1), target)
        loss.backward()
        opt.step()

    def infer():
        with torch.no_grad(), autocast:
            model(x, y)

    results = {}
    for name, fn, training in (("train_pairs_per_s", train_step, True), ("infer_images_per_s", infer, False)):
        model.train(training)
        for _ in range(warmup):
            fn()
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        results[name] = batch * steps / (time.perf_counter() - start)
    if cuda:
        results["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    results["device"] = torch.cuda.get_device_name() if cuda else "cpu"
    results["torch"] = torch.__version__
    return results


def main(_):
    args = dict(mode=FLAGS.mode, batch=FLAGS.batch, crop=FLAGS.crop, dtype=FLAGS.dtype,
                steps=FLAGS.steps, warmup=FLAGS.warmup)
    report = {"config": args, "jax": bench_jax(**args), "jax_version": jax.__version__}
    print(json.dumps({"jax": report["jax"]}, indent=1), flush=True)
    if FLAGS.peer != "no":
        try:
            report["peer"] = bench_peer(**args)
        except ImportError as err:
            if FLAGS.peer == "yes":
                raise
            report["peer"] = {"skipped": f"torch/pyiqa not importable: {err}"}
        if "train_pairs_per_s" in report["peer"]:
            report["ratio_train"] = report["jax"]["train_pairs_per_s"] / report["peer"]["train_pairs_per_s"]
            report["ratio_infer"] = report["jax"]["infer_images_per_s"] / report["peer"]["infer_images_per_s"]
    print(json.dumps(report, indent=1))
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    app.run(main)
