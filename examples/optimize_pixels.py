"""BPCLIP as a loss: optimize the pixels of a noisy image with optax so that the model scores it better.

    python -m examples.optimize_pixels --workdir runs/demo --image data/synthetic_fr/images/I09.png

Adds Gaussian noise to --image, then takes --steps Adam steps on the pixels to minimize
`Scorer.as_loss()` (1 - the normalized score). A full-reference model compares the pixels with the
clean image (its reference); a no-reference model scores them alone. Prints the score before and
after in the training set's scale and, as a check independent of the model, the PSNR to the clean
image; writes the noisy and the optimized images beside --out.

The train step is the pattern for using the loss inside another model's training: jitted once,
the loss passed as an argument (its frozen weights are then arguments of the compiled program,
not constants embedded in it), gradients with respect to the pixels only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from bpclip_jax.api import Scorer
from bpclip_jax.inputs import to_image


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def make_step(optimizer: optax.GradientTransformation):
    @jax.jit
    def step(loss_fn, pixels, opt_state, ref):
        loss, grad = jax.value_and_grad(lambda x: loss_fn(x, ref))(pixels)
        updates, opt_state = optimizer.update(grad, opt_state, pixels)
        pixels = jnp.clip(optax.apply_updates(pixels, updates), 0.0, 1.0)  # stay an image
        return pixels, opt_state, loss

    return step


def main(args: argparse.Namespace) -> None:
    scorer = Scorer.from_pretrained(args.model) if args.model else Scorer.from_workdir(args.workdir)
    loss_fn = scorer.as_loss(remat=args.remat)
    clean = jnp.asarray(to_image(args.image))[None]                            # [1,H,W,3] in [0,1]
    noise = jax.random.normal(jax.random.key(args.seed), clean.shape) * args.noise
    pixels = jnp.clip(clean + noise, 0.0, 1.0)
    ref = clean if scorer.full_reference else None
    optimizer = optax.adam(args.lr)
    opt_state, step = optimizer.init(pixels), make_step(optimizer)

    def report(label: str, x) -> None:
        score = float(loss_fn.scores(x, ref)[0])
        print(f"{label}: score {score:.4f} (loss {1 - float(loss_fn.normalized_scores(x, ref)[0]):.4f}), "
              f"PSNR to the clean image {psnr(x, clean):.2f} dB", flush=True)

    report("noisy    ", pixels)
    noisy, start = pixels, time.perf_counter()
    for k in range(args.steps):
        pixels, opt_state, loss = step(loss_fn, pixels, opt_state, ref)
        if (k + 1) % max(1, args.steps // 5) == 0:
            print(f"  step {k + 1}: loss {float(loss):.4f}", flush=True)
    print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s (the first compiles)")
    report("optimized", pixels)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, x in (("noisy", noisy), ("optimized", pixels)):
        path = out.with_name(f"{out.stem}_{name}.png")
        Image.fromarray(np.asarray(jnp.round(x[0] * 255), np.uint8)).save(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="a training run's workdir")
    source.add_argument("--model", help="an exported model: a folder or a hub id (user/repo)")
    parser.add_argument("--image", required=True, help="a clean image; the noisy start is made from it")
    parser.add_argument("--noise", type=float, default=0.1, help="std of the Gaussian noise, pixels in [0,1]")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate (pixels in [0,1])")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--remat", action="store_true", help="recompute the backbone's activations")
    parser.add_argument("--out", default="runs/optimize_pixels/result.png")
    main(parser.parse_args())
