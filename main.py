"""BPCLIP in JAX: train, evaluate, predict, export.

    python main.py --config configs/kadid_fr.py --workdir runs/kadid
    python main.py --mode eval --config configs/kadid_fr.py --workdir runs/kadid
    python main.py --mode predict --workdir runs/kadid --config.predict.inputs=DIR --config.predict.refs=DIR
    python main.py --mode export --workdir runs/kadid --config.export.path=models/kadid
"""

import logging
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", str(Path(__file__).parent / "configs" / "base.py"),
    "experiment config file (configs/*.py); predict and export read the model from the workdir and "
    "only the config's predict/export fields", lock_config=True)
flags.DEFINE_string("workdir", None, "where checkpoints, metrics and results go")
flags.DEFINE_enum("mode", "train", ["train", "eval", "predict", "export"],
                  "train: train (or resume), select on validation, test; "
                  "eval: test the workdir's best checkpoint on every test set of the config; "
                  "predict: score config.predict.inputs; export: write a self-contained model")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and grain log every save at INFO
    logging.getLogger("bpclip_jax").setLevel(logging.INFO)
    from bpclip_jax import train

    train.maybe_initialize_distributed()
    if FLAGS.mode == "train":
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    elif FLAGS.mode == "eval":
        train.evaluate_workdir(FLAGS.config, FLAGS.workdir)
    elif FLAGS.mode == "predict":
        predict(FLAGS.config.predict, FLAGS.workdir)
    else:
        from bpclip_jax.api import Scorer

        if not FLAGS.config.export.path:
            raise app.UsageError("--mode export needs --config.export.path=DIR")
        print(f"exported to {Scorer.from_workdir(FLAGS.workdir).export(FLAGS.config.export.path)}")


def predict(cfg, workdir):
    from bpclip_jax import api

    if not cfg.inputs:
        raise app.UsageError("--mode predict needs --config.predict.inputs=DIR_OR_GLOB")
    try:
        dists = api.list_images(cfg.inputs)
        refs = api.pair_references(dists, cfg.refs) if cfg.refs else None
    except api.InputError as err:
        raise SystemExit(f"error: {err}") from None
    scorer = api.Scorer.from_workdir(workdir, size_step=cfg.size_step)
    rows = api.predict_files(scorer, dists, refs, cfg.batch_size)
    output = Path(cfg.output or Path(workdir) / "predictions.csv")
    api.write_rows(output, rows)
    print(api.format_table(rows))
    failed = sum(bool(r["error"]) for r in rows)
    print(f"{len(rows) - failed} scored, {failed} failed; {scorer.compiled_shapes()} input shapes "
          f"compiled; wrote {output}")


if __name__ == "__main__":
    app.run(main)
