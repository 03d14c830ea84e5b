"""A user's own distorted photos, scored by a trained FR model: is the ordering monotone?

    python -m examples.own_photos --workdir runs/demo

skimage's 'camera' photograph (512x512, not one of the synthetic set's photos) blurred, noised and
JPEG-compressed at 5 increasing levels with PIL and numpy (not the synthetic set's code), each
scored against the clean photo. Prints the scores per distortion (the training set's scale) and
whether they fall strictly as the distortion grows.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import skimage.data
from PIL import Image, ImageFilter

from bpclip_jax.api import Scorer
from bpclip_jax.explain import scale_phrase


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    noisy = np.asarray(image, np.float32) + rng.normal(0, sigma, (image.height, image.width, 3))
    return Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))


def distortions(ref: Image.Image) -> dict[str, list[Image.Image]]:
    rng = np.random.default_rng(0)
    return {
        "gaussian blur (radius 1, 2, 3, 4, 6 px)":
            [ref.filter(ImageFilter.GaussianBlur(r)) for r in (1, 2, 3, 4, 6)],
        "white noise (sigma 5, 10, 20, 30, 45 of 255)": [noise(ref, s, rng) for s in (5, 10, 20, 30, 45)],
        "JPEG (quality 50, 30, 15, 8, 3)": [jpeg(ref, q) for q in (50, 30, 15, 8, 3)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a trained full-reference run")
    args = parser.parse_args()
    ref = Image.fromarray(skimage.data.camera()).convert("RGB")
    scorer = Scorer.from_workdir(args.workdir)
    if not scorer.full_reference:
        raise SystemExit(f"error: {args.workdir} is a no-reference model; this example compares with "
                         f"the clean photo")
    print(f"clean photo against itself: {float(scorer(ref, ref=ref)):.3f} on {scale_phrase(scorer.dataset)}")
    for name, images in distortions(ref).items():
        scores = np.asarray(scorer(images, [ref] * len(images)))
        falling = bool(np.all(np.diff(scores) < 0))
        print(f"{name:46s} " + "  ".join(f"{s:.3f}" for s in scores)
              + f"   strictly falling: {falling}")


if __name__ == "__main__":
    main()
