"""`python -m bench.negative_prompt --checkpoint checkpoints/scenes`: does a negative prompt help?

Issue 35's measurement, for anyone to run again on a scenes checkpoint. For each of the 80
layouts whose two objects training never showed together, the canonical prompt ("a red circle
on the left and a blue square on the right") is drawn once with no negative prompt and once with
its mirror as the negative prompt ("a blue square on the left and a red circle on the right"),
from the same starting noise, one picture each (no best of N, no caption guidance: the negative
prompt alone), over a few seeds. The pixel reader of the scenes set (docs/GENERALISATION.md)
says what each picture shows: the asked layout (both objects right), the mirror, or something
else. The markdown table docs/GENERALISATION.md shows is printed.
"""

from __future__ import annotations

import argparse
import time

from multimodal.data.hard_negatives import swapped_captions
from multimodal.data.scenes import SceneSpec, all_layouts, canonical_caption, is_heldout
from multimodal.data.scenes_reader import read_scene
from multimodal.generation import ImageTextGenerator


def mirror(spec: SceneSpec) -> SceneSpec:
    return SceneSpec(spec.second, spec.first, spec.arrangement)


def measure(generator: ImageTextGenerator, negative: bool, seeds: list[int]) -> dict[str, float]:
    """How often the pictures show the asked layout and its mirror, and the seconds they took."""
    layouts = [spec for spec in all_layouts() if is_heldout(spec)]
    prompts = [canonical_caption(spec) for spec in layouts]
    negatives = [swapped_captions(prompt)[0] for prompt in prompts] if negative else None
    asked = mirrored = 0
    start = time.perf_counter()
    for seed in seeds:
        images = generator.generate_from_text(prompts, seed=seed, negative_prompt=negatives, num_candidates=1,
                                              caption_guidance=0.0)
        for spec, (image,) in zip(layouts, images):
            shown = read_scene(image)
            asked += shown == spec
            mirrored += shown == mirror(spec)
    count = len(layouts) * len(seeds)
    return {"asked": asked / count, "mirror": mirrored / count, "pictures": count,
            "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/scenes", help="a scenes run or checkpoint folder")
    parser.add_argument("--seeds", type=int, default=3, help="starting noises per layout (default: 3)")
    args = parser.parse_args()
    generator = ImageTextGenerator(args.checkpoint)
    seeds = list(range(args.seeds))
    rows = {label: measure(generator, negative, seeds) for label, negative in (("none", False), ("the mirror", True))}
    sampling = generator.sampling_config(num_candidates=1, caption_guidance=0.0)
    print(f"{rows['none']['pictures']} pictures each ({len(seeds)} seeds × the 80 unseen-pair layouts), "
          f"{sampling.describe()}")
    print("| negative prompt | the asked layout | its mirror | seconds |")
    print("|---|---|---|---|")
    for label, row in rows.items():
        print(f"| {label} | {row['asked']:.1%} | {row['mirror']:.1%} | {row['seconds']:.0f} |")


if __name__ == "__main__":
    main()
