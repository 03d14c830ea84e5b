"""Training and inference throughput of BPCLIP (JAX), and of the PyTorch peer TOPIQ (pyiqa's CFANet)
on the same device with the same batch and crop when torch and pyiqa are importable.

    python -m benchmarks.throughput [--mode fr|nr] [--batch 16] [--crop 384] [--dtype bfloat16]
        [--steps 20] [--out throughput.json] [--peer auto|yes|no] [--profile profile.txt]
        [--model bpclip|cfanet]

`--model cfanet` times our TOPIQ (bpclip_jax.models.cfanet) instead of BPCLIP: the same
architecture as the peer in both frameworks, so its ratios are like for like.

Prints and writes JSON: steady-state train pairs/s (forward + backward + AdamW, after compilation),
inference images/s, compile time, peak device memory, XLA's FLOPs per train step and the achieved
TFLOP/s with its share of the device's peak (when the device is known), and peer/ratio figures.
Inputs are random and stay on the device: this measures the step, not the input pipeline
(benchmarks/input_pipeline.py measures that). Weights are random: speed does not depend on them.
With --profile, a few more train steps of each run under its profiler and the time per device
kernel (JAX: XLA ops from the profiler's trace; peer: torch.profiler's table) goes to a text file,
so one run on a lent GPU says where the time goes without copying traces back.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import tempfile
import time

# The peer runs in this process after JAX: JAX must not reserve 75% of the GPU's memory up front,
# or torch is left the rest. (Set before jax initializes its backend.)
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "fr", ["fr", "nr"], "full-reference or no-reference model")
flags.DEFINE_enum("model", "bpclip", ["bpclip", "cfanet"], "our model: BPCLIP, or TOPIQ's CFANet "
                  "(the peer's architecture: a like-for-like comparison)")
flags.DEFINE_integer("batch", 16, "global batch")
flags.DEFINE_integer("crop", 384, "square input size")
flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "compute dtype (params float32)")
flags.DEFINE_integer("steps", 20, "timed steps")
flags.DEFINE_integer("warmup", 3, "untimed steps after compilation")
flags.DEFINE_enum("peer", "auto", ["auto", "yes", "no"], "run pyiqa's CFANet too")
flags.DEFINE_string("out", "", "JSON output path")
flags.DEFINE_string("profile", "", "text file for per-kernel device time of a few profiled steps")
flags.DEFINE_integer("profile_steps", 5, "train steps traced for --profile")
flags.DEFINE_bool("fold_bn", True, "fold the frozen BatchNorms into the backbone's convolutions "
                  "(the model's way); --nofold_bn runs them as separate layers, for an A/B")

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


def _timed(fn, steps: int, warmup: int, wait=jax.block_until_ready) -> float:
    """Seconds per call of fn after warm-up; `wait(out)` blocks until fn's work is done (JAX's
    block_until_ready by default; a CUDA synchronize for torch)."""
    for _ in range(warmup):
        wait(fn())
    start = time.perf_counter()
    out = None
    for _ in range(steps):
        out = fn()
    wait(out)
    return (time.perf_counter() - start) / steps


def _table(events, steps: int, top: int, title: str) -> list[str]:
    """Rows of per-step time by event name, and by name with its trailing `.N` removed."""
    totals, counts = collections.Counter(), collections.Counter()
    for name, ns in events:
        totals[name] += ns
        counts[name] += 1
    whole = sum(totals.values())
    if not whole:
        return []
    rows = [f"{title}: busy {whole / steps / 1e6:.2f} ms/step over {steps} steps"]
    kinds = collections.Counter()
    for name, ns in totals.items():
        kinds[name.rsplit(".", 1)[0] if name.rsplit(".", 1)[-1].isdigit() else name] += ns
    if len(kinds) < len(totals):
        rows.append("  by kind: " + ", ".join(f"{k} {100 * ns / whole:.1f}%"
                                              for k, ns in kinds.most_common(8)))
    for name, ns in totals.most_common(top):
        rows.append(f"  {ns / steps / 1e6:9.3f} ms/step {100 * ns / whole:5.1f}% "
                    f"x{counts[name] / steps:<4g} {name[:110]}")
    return rows


def summarize_xspace(path: str, steps: int, top: int = 30) -> str:
    """Per-step device time by op from a JAX profiler trace (`*.xplane.pb`): on a GPU, the
    'XLA Ops' line (HLO ops) and the stream lines (kernels); on a CPU, the XLA runtime's threads.
    """
    from jax.profiler import ProfileData

    data = ProfileData.from_file(path)
    rows = []
    for plane in data.planes:
        lines = list(plane.lines)
        if plane.name.startswith("/device:"):
            groups = {"XLA ops": [ln for ln in lines if ln.name == "XLA Ops"],
                      "kernels": [ln for ln in lines if "stream" in ln.name.lower()]}
        elif plane.name == "/host:CPU":
            groups = {"XLA CPU ops": [ln for ln in lines if "PjRtCpuClient" in ln.name]}
        else:
            continue
        for title, chosen in groups.items():
            events = ((ev.name, ev.duration_ns) for ln in chosen for ev in ln.events)
            rows += _table(events, steps, top, f"{plane.name} {title}")
    return "\n".join(rows) or "no device events in the trace"


def profile_jax(fn, steps: int) -> str:
    """Traces `steps` calls of fn (after it has run once) and summarizes the device time. A
    profiler that fails (no CUPTI, say) is reported in the text, not raised: the timings stand."""
    jax.block_until_ready(fn())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            jax.profiler.start_trace(tmp)
            out = None
            for _ in range(steps):
                out = fn()
            jax.block_until_ready(out)
            jax.profiler.stop_trace()
            found = glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True)
            return summarize_xspace(found[0], steps) if found else "the profiler wrote no trace"
    except Exception as err:
        return f"profiling failed: {type(err).__name__}: {err}"


def bench_jax(mode: str, batch: int, crop: int, dtype: str, steps: int, warmup: int,
              profile_steps: int = 0, arch: str = "bpclip") -> dict:
    from bpclip_jax import train
    from bpclip_jax.build import create_model
    from bpclip_jax.evaluate import forward_fn
    from configs import base

    config = base.get_config()
    config.model.pretrained = False
    config.model.full_reference = mode == "fr"
    config.model.arch = arch
    model = create_model(config.model, dtype=dtype)
    tx, _ = train.make_optimizer(config.optim, 1000)
    graphdef, state = train.create_train_state(model, tx)
    mesh = train.make_mesh()
    state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    rng = np.random.default_rng(0)
    batch_np = {"dist": rng.integers(0, 256, (batch, crop, crop, 3), dtype=np.uint8),
                "score": rng.uniform(0, 1, batch).astype(np.float32)}
    if mode == "fr":
        batch_np["ref"] = rng.integers(0, 256, (batch, crop, crop, 3), dtype=np.uint8)
    batch_dev = train.to_global(batch_np, mesh)
    step = train.compile_step(train.make_train_step(graphdef), mesh)
    hyper = jax.device_put(train.Hyper.of(config.optim, 1000, config.seed),
                           jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))

    start = time.perf_counter()
    compiled = step.lower(state, batch_dev, hyper).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0

    holder = {"state": state}

    def one_step():
        holder["state"], metrics = compiled(holder["state"], batch_dev, hyper)
        return metrics["loss"]

    train_s = _timed(one_step, steps, warmup)
    profile = profile_jax(one_step, profile_steps) if profile_steps else None
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
        "peak_memory_bytes": peak_memory(device), "profile": profile,
    }


def bench_peer(mode: str, batch: int, crop: int, dtype: str, steps: int, warmup: int,
               profile_steps: int = 0) -> dict:
    """pyiqa's CFANet (TOPIQ) with its own best settings: channels-last, bf16 autocast on GPU,
    cuDNN autotuning."""
    import torch
    from pyiqa.archs.topiq_arch import CFANet

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    torch.backends.cudnn.benchmark = True  # as pyiqa's (BasicSR's) training sets it: autotuned convs
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
        results[name] = batch / _timed(fn, steps, warmup, wait=lambda _: sync())
    if profile_steps:
        model.train(True)
        activities = [torch.profiler.ProfilerActivity.CPU] + \
            ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        try:
            with torch.profiler.profile(activities=activities) as prof:
                for _ in range(profile_steps):
                    train_step()
                sync()
            sort = "cuda_time_total" if cuda else "self_cpu_time_total"
            results["profile"] = f"{profile_steps} train steps\n" + \
                prof.key_averages().table(sort_by=sort, row_limit=30, max_name_column_width=80)
        except Exception as err:  # the timings above stand
            results["profile"] = f"profiling failed: {type(err).__name__}: {err}"
    if cuda:
        results["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    results["device"] = torch.cuda.get_device_name() if cuda else "cpu"
    results["torch"] = torch.__version__
    return results


def _write(report: dict, profiles: dict, args: dict) -> None:
    """Writes what has been measured so far: a later failure (the peer's, say) loses nothing."""
    if FLAGS.profile:
        with open(FLAGS.profile, "w") as f:
            for name, text in profiles.items():
                f.write(f"==== {name}: {json.dumps(args)}\n{text}\n\n")
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump(report, f, indent=1)


def main(_):
    args = dict(mode=FLAGS.mode, batch=FLAGS.batch, crop=FLAGS.crop, dtype=FLAGS.dtype,
                steps=FLAGS.steps, warmup=FLAGS.warmup)
    if not FLAGS.fold_bn:
        from bpclip_jax.models import resnet

        resnet.conv_bn = lambda conv, bn, x: bn(conv(x))
    profile_steps = FLAGS.profile_steps if FLAGS.profile else 0
    report = {"config": {**args, "model": FLAGS.model, "fold_bn": FLAGS.fold_bn},
              "jax": bench_jax(**args, profile_steps=profile_steps, arch=FLAGS.model),
              "jax_version": jax.__version__}
    profiles = {"jax": report["jax"].pop("profile")}
    print(json.dumps({"jax": report["jax"]}, indent=1), flush=True)
    _write(report, profiles, args)
    if FLAGS.peer != "no":
        try:
            report["peer"] = bench_peer(**args, profile_steps=profile_steps)
            profiles["peer"] = report["peer"].pop("profile", None)
        except ImportError as err:
            if FLAGS.peer == "yes":
                raise
            report["peer"] = {"skipped": f"torch/pyiqa not importable: {err}"}
        if "train_pairs_per_s" in report["peer"]:
            report["ratio_train"] = report["jax"]["train_pairs_per_s"] / report["peer"]["train_pairs_per_s"]
            report["ratio_infer"] = report["jax"]["infer_images_per_s"] / report["peer"]["infer_images_per_s"]
    print(json.dumps(report, indent=1))
    _write(report, profiles, args)


if __name__ == "__main__":
    app.run(main)
