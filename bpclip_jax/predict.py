"""`main.py --mode predict`: score a folder of images with a trained model, one CSV row per image.

Scoring never loses finished work: each row is written and flushed as soon as its image is scored
(a crash or Ctrl-C keeps every row done), an image that cannot be scored fails its own row (its
`error` column says why) and the others are still scored, and `--config.predict.resume=True` skips
the images the CSV already holds. An existing CSV is never overwritten silently.

Columns of the CSV (PREDICTION_COLUMNS): file, ref (FR: its reference), score (the training set's
MOS scale), score_normalized ([0,1], higher is better), scored_size (WxH the model saw), the most
probable adjective of each of the six quality dimensions, error (empty when scored). Rows come in
the order they were scored: images of one size are batched together.

The command is `request` (every mistake refused before the model loads), then `execute` with the
workdir's Scorer (bpclip_jax.api.predict_command joins them). Functions that take a `scorer` take a
bpclip_jax.api.Scorer: the facade passes itself down; this module never imports it.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import itertools
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import ml_collections
from PIL import Image

from bpclip_jax import progress, run_config
from bpclip_jax.errors import UserError
from bpclip_jax.explain import top_adjectives
from bpclip_jax.files import atomic_write, disk_full
from bpclip_jax.inputs import IMAGE_FAILURES, InputError, SizePolicy
from bpclip_jax.text import DIMENSIONS
from data_pipelines.images import image_size
from data_pipelines.records import to_mos

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PREDICTION_COLUMNS = ("file", "ref", "score", "score_normalized", "scored_size", *DIMENSIONS, "error")
# Column names a pairs CSV may use: ours, then the datasets' own score files (KADID-10k's dmos.csv).
DIST_COLUMNS = ("dist", "dist_img", "distorted", "image")
REF_COLUMNS = ("ref", "ref_img", "reference")
MANY_SIZES = 8  # more distinct sizes than this: suggest size_step (each size compiles once)


# ---------------------------------------------------------------------- which files


def list_images(spec: str) -> list[Path]:
    """A directory (its image files), a glob or one file -> sorted paths; an error if none."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
    if not files:
        raise InputError(f"{spec}: no image files found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


@dataclasses.dataclass
class PairsTable:
    """A CSV naming each distorted image's reference: {distorted file name: reference path}."""

    path: Path
    refs: dict[str, Path]

    @classmethod
    def read(cls, path: Path) -> PairsTable:
        """Columns `dist,ref` or a dataset's own names (KADID-10k's dmos.csv: dist_img,ref_img);
        other columns are ignored. A relative reference is looked up beside its distorted image
        first, then beside the CSV."""
        try:
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                columns = [c.strip() for c in reader.fieldnames or []]
                rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise InputError(f"{path}: cannot read it as a CSV ({err})") from err
        dist = next((c for c in DIST_COLUMNS if c in columns), None)
        ref = next((c for c in REF_COLUMNS if c in columns), None)
        if dist is None or ref is None:
            raise InputError(
                f"{path}: a pairs CSV needs a column naming the distorted image "
                f"({' or '.join(DIST_COLUMNS)}) and one naming its reference ({' or '.join(REF_COLUMNS)}); "
                f"its columns are: {', '.join(columns) or 'none'}")
        return cls(path, {Path(row[dist]).name: Path(row[ref]) for row in rows if row.get(dist)})

    def reference_of(self, image: Path) -> Path | None:
        listed = self.refs.get(image.name)
        if listed is None or listed.is_absolute():
            return listed
        beside = image.parent / listed
        return beside if beside.is_file() else self.path.parent / listed

    def is_reference(self, image: Path) -> bool:
        """Listed as a reference and not as a distorted image (a dataset folder holds both)."""
        return image.name not in self.refs and image.name in {p.name for p in self.refs.values()}


def pair_references(dists: list[Path], spec: str) -> list[Path | None]:
    """The reference of each image: one file for all, a directory holding files of the same names,
    or a pairs CSV (PairsTable). None where none is found (that row then fails, saying so)."""
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise InputError(f"--config.predict.refs={spec}: no such file")
        table = PairsTable.read(path)
        return [table.reference_of(d) for d in dists]
    if path.is_dir():
        return [path / d.name if (path / d.name).is_file() else None for d in dists]
    if path.is_file():
        return [path] * len(dists)
    raise InputError(f"--config.predict.refs={spec}: not a reference image, a directory of references "
                     f"or a pairs CSV")


# ---------------------------------------------------------------------- the CSV


class PredictionsFile:
    """predictions.csv, written row by row and flushed, so that a crash keeps every row done.

    An existing file is refused unless `overwrite` (replace it) or `resume` (keep its scored rows,
    score the rest): then `done` holds the (file, ref) pairs already scored.
    """

    @staticmethod
    def check(path: Path, *, overwrite: bool = False, resume: bool = False) -> None:
        """Raises UserError when the file may not be opened so (before any work starts)."""
        if overwrite and resume:
            raise UserError("--config.predict.overwrite and --config.predict.resume exclude each other: "
                            "choose one")
        if path.exists() and not overwrite and not resume:
            raise UserError(f"{path} exists: --config.predict.resume=True scores only the images it "
                            f"lacks, --config.predict.overwrite=True replaces it (or choose another "
                            f"--config.predict.output)")

    def __init__(self, path: Path, *, overwrite: bool = False, resume: bool = False):
        self.check(path, overwrite=overwrite, resume=resume)
        self.path, self.done = path, set()
        kept: list[dict] = []
        if path.exists() and not overwrite:
            kept = self._scored_rows(path)
            self.done = {(r["file"], r["ref"]) for r in kept}
        path.parent.mkdir(parents=True, exist_ok=True)
        text = io.StringIO(newline="")  # the kept rows, whole, before anything is appended
        writer = csv.DictWriter(text, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        writer.writerows(kept)
        atomic_write(path, text.getvalue())
        self._file = path.open("ab", buffering=0)  # unbuffered: a failed write leaves nothing pending

    @staticmethod
    def _scored_rows(path: Path) -> list[dict]:
        """The rows of an earlier run that hold a score (failed rows and a line cut by a kill are
        dropped: they are scored again)."""
        try:
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                if tuple(reader.fieldnames or ()) != PREDICTION_COLUMNS:
                    raise UserError(f"{path} was not written by --mode predict (its columns: "
                                    f"{', '.join(reader.fieldnames or [])}); choose another "
                                    f"--config.predict.output")
                rows = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise UserError(f"{path}: cannot read it to resume ({err})") from err
        return [r for r in rows if not r["error"] and _is_number(r["score"]) and None not in r.values()]

    def write(self, rows: Iterable[dict]) -> None:
        """Appends rows, on disk when it returns. A full disk: a DiskFullError naming the file,
        which is cut back to its last whole row (the rows written before stay)."""
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=PREDICTION_COLUMNS, extrasaction="ignore")
        writer.writerows({k: _cell(row.get(k)) for k in PREDICTION_COLUMNS} for row in rows)
        data = memoryview(text.getvalue().encode())
        end = os.fstat(self._file.fileno()).st_size
        with disk_full(self.path, len(data), lambda: os.truncate(self.path, end)):
            while data:
                data = data[self._file.write(data):]

    def close(self) -> None:
        self._file.close()


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------- scoring


@dataclasses.dataclass
class Job:
    """One image to score: its files, the size it is scored at, or why it cannot be."""

    file: Path
    ref: Path | None
    size: tuple[int, int] | None = None
    error: str = ""

    def row(self, **values) -> dict:
        return {"file": str(self.file), "ref": "" if self.ref is None else str(self.ref),
                "error": self.error, **values}


def plan(dists: list[Path], refs: list[Path | None] | None, sizes: SizePolicy, *,
         full_reference: bool, refs_spec: str = "") -> list[Job]:
    """Jobs with the size each image is scored at, read from the file headers (no pixel is
    decoded): a missing reference, an unreadable header or an image too large to decode fails its
    job here, before the model is loaded."""
    refs = [None] * len(dists) if refs is None else refs
    jobs = []
    for d, r in zip(dists, refs):
        job = Job(d, r)
        try:
            if full_reference and r is None:
                raise InputError(f"{d}: no reference for it in {refs_spec}")
            height, width = _header_size(d)
            if r is not None and _header_size(r) != (height, width):
                ref_h, ref_w = _header_size(r)
                raise InputError(f"{d} is {width}x{height} but its reference {r} is {ref_w}x{ref_h}")
            job.size = sizes.target(height, width)
        except IMAGE_FAILURES as err:
            job.error = _message(err)
        jobs.append(job)
    return jobs


def _header_size(path: Path) -> tuple[int, int]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return image_size(str(path))
    except Image.DecompressionBombError as err:
        raise InputError(f"{path}: too large to decode ({err}); downscale it first") from err


def _message(err: BaseException) -> str:
    text = str(err).strip().replace("\n", " ")
    return text if isinstance(err, UserError | ValueError) else f"{type(err).__name__}: {text}"


def by_size(jobs: list[Job]) -> list[Job]:
    """The scorable jobs, those of one size together (in order of first appearance), so that each
    size compiles once and fills whole batches."""
    order: dict[tuple, list[Job]] = {}
    for job in jobs:
        if not job.error:
            order.setdefault(job.size, []).append(job)
    return [job for group in order.values() for job in group]


def _prepared(scorer, jobs: list[Job], threads: int, window: int
              ) -> Iterator[tuple[Job, tuple | None]]:
    """(job, prepared pair) in order, decoded by `threads` threads at most `window` ahead; a job
    whose image fails to load gets None and its error."""

    def load(job: Job):
        try:
            return scorer.prepare(job.file, job.ref, str(job.file))
        except IMAGE_FAILURES as err:
            job.error = _message(err)
            return None

    with ThreadPoolExecutor(max(1, threads)) as pool:
        pending = iter(jobs)
        futures = [(job, pool.submit(load, job)) for job in itertools.islice(pending, window)]
        while futures:
            job, future = futures.pop(0)
            nxt = next(pending, None)
            if nxt is not None:
                futures.append((nxt, pool.submit(load, nxt)))
            yield job, future.result()


def _out_of_memory(err: Exception) -> bool:
    return isinstance(err, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(err)


def score_jobs(scorer, jobs: list[Job], batch_size: int = 8, threads: int = 2
               ) -> Iterator[list[dict]]:
    """Scores the jobs batch by batch and yields each batch's rows as soon as it is done (failed
    images included, with their error). An image that exhausts the device's memory fails alone."""
    batch: list[tuple[Job, tuple]] = []
    for job, pair in _prepared(scorer, jobs, threads, window=2 * batch_size):
        if pair is None:
            yield [job.row()]
            continue
        if batch and batch[0][1][0].shape != pair[0].shape:
            yield _score_batch(scorer, batch)
            batch = []
        batch.append((job, pair))
        if len(batch) == batch_size:
            yield _score_batch(scorer, batch)
            batch = []
    if batch:
        yield _score_batch(scorer, batch)


def _score_batch(scorer, batch: list[tuple[Job, tuple]]) -> list[dict]:
    try:
        scores, probs, _ = scorer.run([pair for _, pair in batch])
    except Exception as err:
        if not _out_of_memory(err):
            raise  # a bug, not an image's fault: the rows written so far stay on disk
        if len(batch) > 1:
            return [row for one in batch for row in _score_batch(scorer, [one])]
        job, (dist, _) = batch[0]
        job.error = (f"out of device memory at {dist.shape[1]}x{dist.shape[0]}; score it smaller with "
                     f"--config.predict.short_side=N")
        return [job.row()]
    rows = []
    for k, (job, (dist, _)) in enumerate(batch):
        words = top_adjectives(probs[k]) if probs is not None else {}
        rows.append(job.row(score=float(to_mos(scores[k], scorer.dataset)), score_normalized=float(scores[k]),
                            scored_size=f"{dist.shape[1]}x{dist.shape[0]}", **words))
    return rows


def predict_files(scorer, dists: list[Path], refs: list[Path | None] | None = None,
                  batch_size: int = 8, threads: int = 2) -> list[dict]:
    """One row per image (PREDICTION_COLUMNS), failed images included; in scoring order."""
    jobs = plan(dists, refs, scorer.sizes, full_reference=scorer.full_reference)
    rows = [job.row() for job in jobs if job.error]
    for batch in score_jobs(scorer, by_size(jobs), batch_size, threads):
        rows.extend(batch)
    return rows


def format_table(rows: list[dict], limit: int = 50) -> str:
    words = any(row.get(d) for row in rows for d in DIMENSIONS)  # none without the text branch
    lines = [f"{'file':40s} {'score':>8s}" + ("  top adjectives" if words else "")]
    for row in rows[:limit]:
        name = Path(row["file"]).name[-40:]
        if row["error"]:
            lines.append(f"{name:40s} {'FAILED':>8s}  {row['error']}")
        else:
            adjectives = ", ".join(row[d] for d in DIMENSIONS if row.get(d))
            lines.append(f"{name:40s} {row['score']:8.4f}" + (f"  {adjectives}" if words else ""))
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows in the CSV")
    return "\n".join(lines)


# ---------------------------------------------------------------------- the command


def check_model_inputs(config, cfg, workdir) -> None:
    """Refuses, before the model is loaded, a full-reference model without references and a
    no-reference model with them."""
    from bpclip_jax.explain import DATASET_NAMES

    trained_on = DATASET_NAMES.get(config.data.dataset, config.data.dataset)
    if config.model.full_reference and not cfg.refs:
        raise UserError(
            f"{workdir} holds a full-reference model (trained on {trained_on}): give each image's reference "
            f"with --config.predict.refs=FILE (one for all), DIR (same file names) or a pairs CSV "
            f"(columns dist,ref, or a dataset's own, like KADID-10k's dmos.csv)")
    if not config.model.full_reference and cfg.refs:
        raise UserError(f"{workdir} holds a no-reference model (trained on {trained_on}); it takes no "
                        f"references: drop --config.predict.refs")


def select_inputs(cfg) -> tuple[list[Path], list[Path | None] | None, str]:
    """The images to score and their references; a note when a pairs CSV marks some as references."""
    dists = list_images(cfg.inputs)
    if not cfg.refs:
        return dists, None, ""
    note = ""
    refs_path = Path(cfg.refs).expanduser()
    if refs_path.suffix.lower() == ".csv" and refs_path.is_file():
        table = PairsTable.read(refs_path)
        kept = [d for d in dists if not table.is_reference(d)]
        if len(kept) < len(dists):
            note = f"skipped {len(dists) - len(kept)} images that {cfg.refs} lists as references"
            dists = kept or dists
    return dists, pair_references(dists, cfg.refs), note


@dataclasses.dataclass
class Request:
    """What `--mode predict` was asked, checked before the model loads: the predict config, the CSV,
    the sizes images are scored at, one job per image and a note for the user (or '')."""

    cfg: ml_collections.ConfigDict
    output: Path
    sizes: SizePolicy
    jobs: list[Job]
    note: str

    @property
    def needs_model(self) -> bool:
        """Whether any image can be scored (when none can, the model is not loaded)."""
        return bool(by_size(self.jobs))


def request(cfg, workdir) -> Request:
    """`--mode predict`'s first half: every mistake (no inputs, a model that takes or lacks
    references, a CSV that would be overwritten) refused in one line, and each image's size read
    from its header, before the model loads."""
    if not cfg.inputs:
        raise UserError("--mode predict needs --config.predict.inputs=DIR_OR_GLOB")
    config = run_config.read(workdir)
    check_model_inputs(config, cfg, workdir)
    dists, refs, note = select_inputs(cfg)
    output = Path(cfg.output or Path(workdir) / "predictions.csv")
    sizes = SizePolicy.for_dataset(config.data.dataset, cfg.short_side, cfg.size_step)
    jobs = plan(dists, refs, sizes, full_reference=config.model.full_reference, refs_spec=cfg.refs)
    PredictionsFile.check(output, overwrite=cfg.overwrite, resume=cfg.resume)
    return Request(cfg, output, sizes, jobs, note)


def execute(asked: Request, scorer) -> None:
    """`--mode predict`'s second half: scores the request's images with `scorer` (the workdir's
    Scorer, built for asked.sizes; None when no image can be scored) into its CSV."""
    cfg, output, jobs = asked.cfg, asked.output, asked.jobs
    sink = PredictionsFile(output, overwrite=cfg.overwrite, resume=cfg.resume)
    try:
        _announce(jobs, sink, asked.sizes, asked.note)
        todo = [j for j in jobs if (str(j.file), "" if j.ref is None else str(j.ref)) not in sink.done]
        if not todo:
            progress.say(f"all {len(jobs)} images are already scored in {output}; nothing to do")
            return
        sink.write(job.row() for job in todo if job.error)
        if not by_size(todo):
            raise UserError(f"none of the {len(todo)} images can be scored; {output} says why in its "
                            f"error column (the first: {next(j.error for j in todo if j.error)})")
        rows = _score_into(sink, scorer, todo, cfg)
    except KeyboardInterrupt:
        progress.say(f"interrupted: the rows scored so far are in {output}; the same command with "
                     f"--config.predict.resume=True scores the rest")
        raise
    finally:
        sink.close()
    _report(rows, todo, len(sink.done), output, scorer)


def _announce(jobs: list[Job], sink: PredictionsFile, sizes: SizePolicy, note: str) -> None:
    if note:
        progress.say(note)
    if sink.done:
        progress.say(f"resuming: {len(sink.done)} images already scored in {sink.path} are skipped")
    shapes = {j.size for j in jobs if not j.error}
    if not sizes.size_step and len(shapes) > MANY_SIZES:
        progress.say(f"note: these images come in {len(shapes)} sizes and each new size compiles the model "
                     f"once; --config.predict.size_step=64 bounds that, but scores then differ slightly "
                     f"from the protocol's (each image at its own size)")


def _score_into(sink: PredictionsFile, scorer, todo: list[Job], cfg) -> list[dict]:
    rows = [job.row() for job in todo if job.error]
    scorable = by_size(todo)
    ticker, start, done = progress.Ticker(), time.perf_counter(), 0
    with progress.bar(len(scorable), "predict", "img") as bar:
        for batch in score_jobs(scorer, scorable, cfg.batch_size, cfg.threads):
            sink.write(batch)
            rows.extend(batch)
            bar.update(len(batch))
            done += len(batch)
            ticker.tick(f"predict: {done}/{len(scorable)} images, "
                        f"{done / (time.perf_counter() - start):.1f} img/s")
    progress.say(f"scored {done} images in {progress.duration(time.perf_counter() - start)} "
                 f"({done / (time.perf_counter() - start):.2f} img/s, compiling included)")
    return rows


def _report(rows: list[dict], todo: list[Job], already: int, output: Path, scorer) -> None:
    failed = [r for r in rows if r["error"]]
    scored = len(rows) - len(failed)
    progress.say(format_table(rows))
    from bpclip_jax.build import uses_text

    if uses_text(scorer.config.model) and not scorer.config.model.pretrained:
        from bpclip_jax.explain import STAND_IN_NOTE

        progress.say(f"note: the adjective columns: {STAND_IN_NOTE}")
    progress.say(f"{scored} scored, {len(failed)} failed" + (f", {already} scored before" if already else "")
                 + f"; {scorer.compiled_shapes()} input shapes compiled; wrote {output}")
    if scored == 0 and already == 0:
        raise UserError(f"none of the {len(todo)} images could be scored; {output} says why in its error "
                        f"column (the first: {failed[0]['error']})")
