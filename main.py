"""BPCLIP in JAX: train, evaluate, predict, export.

    python main.py --config configs/kadid_fr.py --workdir runs/kadid
    python main.py --mode eval --workdir runs/kadid [--config configs/kadid_fr.py]
    python main.py --mode predict --workdir runs/kadid --config.predict.inputs=DIR --config.predict.refs=DIR
    python main.py --mode export --workdir runs/kadid --config.export.path=models/kadid

A user's mistake ends in one line on stderr and exit code 1 (2 for flags that do not parse);
--verbose adds its traceback.
"""

from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from bpclip_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", str(Path(__file__).parent / "configs" / "base.py"),
    "experiment config file (configs/*.py). train: required. eval: optional (the run's own model and "
    "split come from WORKDIR/config.json; the file may name other test sets and roots). "
    "predict/export: only its predict/export fields are read", lock_config=True)
flags.DEFINE_string("workdir", None, "where checkpoints, metrics and results go")
flags.DEFINE_enum("mode", "train", ["train", "eval", "predict", "export"],
                  "train: train (or resume), select on validation, test; "
                  "eval: test the workdir's selected checkpoint; "
                  "predict: score config.predict.inputs; export: write a self-contained model")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from bpclip_jax import train

    train.maybe_initialize_distributed()
    if FLAGS.mode == "train":
        if not FLAGS["config"].present:
            raise app.UsageError("--mode train needs --config (configs/*.py)")
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    elif FLAGS.mode == "eval":
        given = FLAGS.config if FLAGS["config"].present else None
        train.evaluate_workdir(given, FLAGS.workdir, config_flags.get_override_values(FLAGS["config"]))
    elif FLAGS.mode == "predict":
        from bpclip_jax.api import predict_command

        predict_command(FLAGS.config.predict, FLAGS.workdir)
    else:
        from bpclip_jax.api import export_command

        export_command(FLAGS.config.export, FLAGS.workdir)


if __name__ == "__main__":
    cli.run(main)
