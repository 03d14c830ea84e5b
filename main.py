"""BPCLIP in JAX: train, evaluate, predict.

    python main.py --config configs/kadid_fr.py --workdir runs/kadid
    python main.py --mode eval --config configs/kadid_fr.py --workdir runs/kadid
"""

import logging

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "where checkpoints, metrics and results go")
flags.DEFINE_enum("mode", "train", ["train", "eval"],
                  "train: train (or resume), select on validation, test; "
                  "eval: test the workdir's best checkpoint on every test set of the config")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and grain log every save at INFO
    logging.getLogger("bpclip_jax").setLevel(logging.INFO)
    from bpclip_jax import train

    train.maybe_initialize_distributed()
    if FLAGS.mode == "train":
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
        train.evaluate_workdir(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
