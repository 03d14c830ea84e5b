"""Training input pipeline throughput: pairs/s of 384 crops from 512x384 PNG pairs (KADID-shaped).

    python -m benchmarks.input_pipeline [--root DIR] [--threads 2] [--workers 0] [--batches 40]

Without --root it builds the synthetic FR set (data_pipelines.synthetic) in a temporary directory.
Prints pairs/s for each (threads, workers) setting given; the first batches (warm-up, reference
decoding) are not timed.
"""

import json
import tempfile
import time

from absl import app, flags

from data_pipelines import load, pipeline, synthetic

FLAGS = flags.FLAGS
flags.DEFINE_string("root", None, "a KADID-10k-layout directory (default: a fresh synthetic set)")
flags.DEFINE_multi_integer("threads", [2], "grain reader threads (one run per value)")
flags.DEFINE_multi_integer("workers", [0], "grain worker processes (one run per value)")
flags.DEFINE_integer("batch", 16, "batch size")
flags.DEFINE_integer("crop", 384, "crop size")
flags.DEFINE_integer("batches", 40, "timed batches")
flags.DEFINE_integer("warmup", 5, "untimed batches first")


def measure(records, threads: int, workers: int) -> float:
    ds = pipeline.train_dataset(records, batch_size=FLAGS.batch, crop=FLAGS.crop, seed=0)
    it = pipeline.loader(ds, threads=threads, workers=workers, prefetch=2 * max(threads, 1))
    for _ in range(FLAGS.warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(FLAGS.batches):
        next(it)
    return FLAGS.batches * FLAGS.batch / (time.perf_counter() - start)


def main(_):
    with tempfile.TemporaryDirectory() as tmp:
        root = FLAGS.root or synthetic.build(tmp, "fr")
        records = load("kadid10k", root)
        results = []
        for workers in FLAGS.workers:
            for threads in FLAGS.threads:
                rate = measure(records, threads, workers)
                results.append(dict(threads=threads, workers=workers, pairs_per_s=round(rate, 1)))
                print(f"threads={threads} workers={workers}: {rate:.1f} pairs/s "
                      f"(batch {FLAGS.batch}, crop {FLAGS.crop})", flush=True)
        print(json.dumps(results))


if __name__ == "__main__":
    app.run(main)
