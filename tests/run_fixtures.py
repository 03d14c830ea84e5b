"""Workdirs as a training run leaves them, without training: config.json and (optionally) a step-0
checkpoint of a random tiny model, written with the project's own checkpoint code, so that
`Scorer.from_workdir` and `--mode predict/export` load them as they load a trained run. And a
valid PNG too large for PIL to decode."""

import struct
import zlib
from pathlib import Path

from bpclip_jax import checkpoint, run_config, train
from bpclip_jax.build import create_model
from configs import base


def untrained_workdir(workdir: Path, *, full_reference: bool, dataset: str = "kadid10k",
                      checkpoints: bool = True):
    """Writes the workdir and returns its config; the model is create_model(config.model, seed=1)."""
    config = base.get_config("tiny")
    config.model.full_reference = full_reference
    config.data.dataset = dataset
    workdir.mkdir(parents=True, exist_ok=True)
    run_config.write(config, workdir)
    if checkpoints:
        model = create_model(config.model, seed=1)
        tx, _ = train.make_optimizer(config.optim, 1)
        _, state = train.create_train_state(model, tx, config.train.freeze_backbone)
        ckpt = checkpoint.Checkpoints(workdir)
        try:
            ckpt.save_frozen(state.frozen)
            ckpt.save_latest(0, state.resumable(), {"history": [], "best": None})
        finally:
            ckpt.close()
    return config


def huge_png(path: Path, side: int = 15000) -> Path:
    """A valid black 8-bit grayscale PNG of side x side pixels (15000: 225 megapixels, beyond PIL's
    decompression-bomb limit), about 1 MB, written 100 rows at a time. `side` a multiple of 100."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(1)
    rows = bytes(100 * (side + 1))  # 100 rows: filter byte 0, then the pixels
    data = b"".join(packer.compress(rows) for _ in range(side // 100)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
                     + chunk(b"IEND", b""))
    return path
