"""The paper's protocol: ten random splits (seeds 0..9), each trained and tested, reported as
mean +- std next to the paper's numbers.

    python -m bpclip_jax.protocol --config configs/kadid_fr.py --workdir runs/kadid --splits 10

Split k runs in WORKDIR/split_<k> with data.split_seed = k. A split with results.json is done and
only read; an interrupted split resumes from its checkpoint. --aggregate_only writes the table from
the splits that are done. Output: WORKDIR/table.md and WORKDIR/table.json.
"""

from __future__ import annotations

import copy
import json
import logging
import runpy
from pathlib import Path

import numpy as np
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
flags.DEFINE_string("workdir", None, "the protocol's directory (one split_<k> per seed)")
flags.DEFINE_integer("splits", 10, "number of split seeds, 0..splits-1")
flags.DEFINE_bool("aggregate_only", False, "only aggregate the splits that are done")


def split_config(config, seed: int):
    config = copy.deepcopy(config)
    with config.unlocked():
        config.data.split_seed = seed
    return config


def run_splits(config, workdir: Path, splits: int, aggregate_only: bool) -> dict[int, dict]:
    """{seed: results} of every finished split, running the unfinished ones unless aggregate_only."""
    from bpclip_jax import train

    done = {}
    for seed in range(splits):
        results_file = workdir / f"split_{seed}" / "results.json"
        if not results_file.is_file() and not aggregate_only:
            logging.getLogger(__name__).info("split %d of %d", seed + 1, splits)
            train.train_and_evaluate(split_config(config, seed), workdir / f"split_{seed}")
        if results_file.is_file():
            done[seed] = json.loads(results_file.read_text())
    return done


def aggregate(done: dict[int, dict], paper: dict) -> dict:
    """{test set: {metric: (mean, std, n)}} over the finished splits (std with ddof=0)."""
    table = {}
    for name in sorted({k for results in done.values() for k in results}):
        rows = [r[name] for r in done.values() if name in r]
        table[name] = {m: (float(np.mean([r[m] for r in rows])), float(np.std([r[m] for r in rows])),
                           len(rows)) for m in ("plcc", "srcc", "plcc_logistic", "krcc", "rmse")}
        if name in paper:
            table[name]["paper"] = paper[name]
    return table


def markdown(table: dict, config_name: str) -> str:
    lines = [f"# {config_name}: mean +- std over splits", "",
             "| test set | splits | PLCC | SRCC | PLCC (logistic) | KRCC | paper PLCC / SRCC |",
             "|---|---|---|---|---|---|---|"]
    def cell(row, m):
        return f"{row[m][0]:.4f} +- {row[m][1]:.4f}"

    for name, row in table.items():
        paper = "{:.3f} / {:.3f}".format(*row["paper"]) if "paper" in row else "-"
        lines.append(f"| {name} | {row['srcc'][2]} | {cell(row, 'plcc')} | {cell(row, 'srcc')} | "
                     f"{cell(row, 'plcc_logistic')} | {cell(row, 'krcc')} | {paper} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("bpclip_jax").setLevel(logging.INFO)
    workdir = Path(FLAGS.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = config_flags.get_config_filename(FLAGS["config"])
    paper = runpy.run_path(config_file).get("PAPER", {})
    done = run_splits(FLAGS.config, workdir, FLAGS.splits, FLAGS.aggregate_only)
    if not done:
        raise SystemExit(f"no split of {workdir} has results yet")
    table = aggregate(done, paper)
    (workdir / "table.json").write_text(json.dumps(table, indent=1) + "\n")
    (workdir / "table.md").write_text(markdown(table, Path(config_file).stem))
    print(markdown(table, Path(config_file).stem))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
