"""A run's config: written once to WORKDIR/config.json, and the rules for reading a run back.

A workdir's config.json fixes what its checkpoints are. Whoever picks the run up again builds from
it, so that a checkpoint is never restored into another graph (`direction` and `progressive`
change the computation but not the parameter tree: such a mismatch would restore without error
and report wrong numbers):
  - resuming a training run (`--mode train` on a workdir with checkpoints) refuses a config that
    differs from config.json anywhere but in RUNTIME fields: a resumed run is the run it continues;
  - evaluation, prediction and export take the model, the compute dtype and the split from
    config.json; the command line may name other test sets, roots and runtime fields, and an
    explicit override (`--config.model.x=...`) that contradicts config.json is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections

from bpclip_jax.errors import UserError, WorkdirError
from bpclip_jax.files import atomic_write

CONFIG_FILE = "config.json"

# Fields that may differ between a run and its continuation: where files are, how fast they are
# read, what is logged and when the run stops. None of them changes a trained number.
RUNTIME = ("data.root", "data.cross", "data.threads", "data.workers", "data.prefetch",
           "data.eval_batch_size", "data.download", "data.test_parts", "train.log_every",
           "train.stop_at_step", "train.max_to_keep", "init_from", "predict", "export")
# What evaluation takes from the run: the model as trained and the split it was trained on (another
# split would test on training images).
FROM_RUN = ("model", "dtype", "seed", "data.dataset", "data.ratios", "data.split_seed",
            "data.by_content", "data.official_split", "data.split_file", "data.split_index",
            "data.val_holdout", "data.train_part", "data.select_part", "data.synthetic",
            "data.synthetic_size", "train.freeze_backbone")


def write(config: ml_collections.ConfigDict, workdir: str | Path) -> Path:
    """WORKDIR/config.json, written whole or not at all (write, then rename)."""
    return atomic_write(Path(workdir) / CONFIG_FILE, config.to_json_best_effort(indent=1) + "\n")


def read(path: str | Path) -> ml_collections.ConfigDict:
    """The config a run was written with, on top of today's defaults (fields added since keep
    their defaults). A directory means its config.json."""
    from configs import base

    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / CONFIG_FILE
    if not path.is_file():
        raise WorkdirError(f"{path.parent} holds no {CONFIG_FILE}: it is not a training run's workdir "
                           f"(train one with `python main.py --config ... --workdir {path.parent}`)")
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WorkdirError(f"{path} is not valid JSON ({err}); it was damaged or edited") from None
    config = base.get_config()
    with config.unlocked():
        for key, value in upgrade(flatten(saved)).items():
            _assign(config, key, value)
    return config


def upgrade(flat: dict) -> dict:
    """A config.json written before `model.text_head` and `model.stand_in_text` existed, read as
    the model it describes: its text branch regressed on the prompt softmax (tau learned when
    `model.learn_tau`), and its stand-in text features had every pairwise cosine at 0.995.
    Today's defaults (the cosine head, CLIP-like stand-ins) would build another model from the
    same parameter tree, which restores without error and scores wrongly."""
    flat = dict(flat)
    learned = flat.pop("model.learn_tau", None)
    if "model.use_text" in flat and "model.text_head" not in flat:
        flat["model.text_head"] = "softmax_learned" if learned else "softmax"
    if "model.use_text" in flat and "model.stand_in_text" not in flat:
        flat["model.stand_in_text"] = "uniform:0.995"
    return flat


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'a.b.c': value} of a nested dict; `data.cross` ({set: root}) stays one value, lists become
    tuples (ConfigDict's tuples are written to JSON as lists)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and f"{prefix}{key}" != "data.cross":
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def _assign(config: ml_collections.ConfigDict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for name in parents:
        if name not in node:
            node[name] = ml_collections.ConfigDict()
        node = node[name]
    node[leaf] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value


def _as_plain(config: ml_collections.ConfigDict) -> dict:
    return flatten(json.loads(config.to_json_best_effort()))


def _covered(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def differences(saved: ml_collections.ConfigDict, given: ml_collections.ConfigDict,
                keys=None) -> dict[str, tuple]:
    """{field: (saved value, given value)} where the two configs differ, over `keys` (prefixes; all
    fields by default)."""
    a, b = _as_plain(saved), _as_plain(given)
    fields = sorted(set(a) | set(b))
    if keys is not None:
        fields = [k for k in fields if _covered(k, keys)]
    return {k: (a.get(k), b.get(k)) for k in fields if a.get(k) != b.get(k)}


def run_differences(saved: ml_collections.ConfigDict, given: ml_collections.ConfigDict) -> dict[str, tuple]:
    """differences() outside the RUNTIME fields: what makes `given` another run than `saved`."""
    return {k: v for k, v in differences(saved, given).items() if not _covered(k, RUNTIME)}


def _listing(diffs: dict[str, tuple], saved_name: str, given_name: str) -> str:
    return "; ".join(f"{k}: {a!r} in {saved_name}, {b!r} {given_name}" for k, (a, b) in diffs.items())


def check_resume(saved: ml_collections.ConfigDict, given: ml_collections.ConfigDict,
                 workdir: str | Path) -> None:
    """Refuses to continue a run with a config that differs from the one it started with."""
    diffs = run_differences(saved, given)
    if diffs:
        raise WorkdirError(
            f"{workdir} holds a run started with another config, refusing to resume it: "
            f"{_listing(diffs, CONFIG_FILE, 'now')}. Resume with the run's own flags, or train in "
            f"another --workdir")


def for_evaluation(saved: ml_collections.ConfigDict, given: ml_collections.ConfigDict | None,
                   overrides: dict, workdir: str | Path) -> tuple[ml_collections.ConfigDict, dict]:
    """The config that evaluates a run: FROM_RUN fields from its config.json, the rest from `given`
    (None: the run's own config throughout). `overrides` are the command line's explicit
    `--config.x=v` values (applied to the run's config when `given` is None): one of them that
    contradicts a FROM_RUN field is refused. Returns the
    config and {field: (run's value, given value)} of the FROM_RUN fields the given config differed
    in (taken from the run)."""
    if given is None:  # the run's own config, with the command line's explicit overrides
        if not overrides:
            return saved, {}
        given = ml_collections.ConfigDict(saved.to_dict())
        with given.unlocked():
            for key, value in overrides.items():
                _assign(given, key, value)
    contradicted = {k: (_as_plain(saved).get(k), v) for k, v in overrides.items()
                    if _covered(k, FROM_RUN) and _as_plain(saved).get(k) != _normal(v)}
    if contradicted:
        raise UserError(
            f"{workdir} was trained with another model or split than the command line asks: "
            f"{_listing(contradicted, f'{workdir}/{CONFIG_FILE}', 'on the command line')}. Its "
            f"checkpoints only make sense with the run's own values: drop these flags")
    config = ml_collections.ConfigDict(given.to_dict())
    taken = differences(saved, given, FROM_RUN)
    with config.unlocked():
        for key in taken:
            _assign(config, key, _as_plain(saved).get(key))
    return config, taken


def _normal(value):
    return tuple(value) if isinstance(value, list) else value
