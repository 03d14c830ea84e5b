"""How far bfloat16 compute moves a trained run's test metrics from float32.

    python -m benchmarks.bf16_drift --workdir runs/demo

Loads the run's selected checkpoint twice, its model built from the run's config.json with
dtype float32 and with bfloat16 (float32 parameters either way), scores each test part of the run
with both and prints, per part, the metrics of each and the largest score difference on the
[0, 1] scale. Writes nothing in the workdir.
"""

import dataclasses

import numpy as np
from absl import app, flags
from flax import nnx

from bpclip_jax import data, evaluate, run_config, trained

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a trained run's workdir", required=True)


@dataclasses.dataclass
class Scored:
    pred: np.ndarray
    metrics: dict


def score(workdir: str, dtype: str) -> dict[str, Scored]:
    config = run_config.read(workdir)
    config.dtype = dtype
    loaded = trained.load(workdir, config)
    graphdef, params, frozen = nnx.split(loaded.model, nnx.Param, ...)
    parts = data.load_parts(config.data)
    out = {}
    for part in config.data.test_parts:
        records = parts[part]
        pred = evaluate.predict(graphdef, params, frozen, records, config.data.eval_batch_size,
                                desc=f"{dtype} {part}")
        out[data.part_label(config.data, part)] = Scored(pred, evaluate.metrics_on(records, pred))
    return out


def main(_):
    f32, bf16 = score(FLAGS.workdir, "float32"), score(FLAGS.workdir, "bfloat16")
    for label, a in f32.items():
        b = bf16[label]
        print(f"{label} (n {a.metrics['n']}): largest |score bf16 - float32| "
              f"{np.max(np.abs(a.pred - b.pred)):.5f} on the [0, 1] scale")
        for key in ("srcc", "plcc", "krcc", "rmse"):
            print(f"  {key}: float32 {a.metrics[key]:.4f}, bfloat16 {b.metrics[key]:.4f}, "
                  f"difference {b.metrics[key] - a.metrics[key]:+.4f}")


if __name__ == "__main__":
    app.run(main)
