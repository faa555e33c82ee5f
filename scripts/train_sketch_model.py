"""Reproduce the bundled hotdog-sketch weights, then score them on the held-out seed.

    python scripts/train_sketch_model.py                      # writes the shipped file
    python scripts/train_sketch_model.py --out /tmp/s.safetensors --steps 200

Exit status 1 when the trained model misses a quality target, so a regression cannot ship quietly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hotdog_dagster.core.model.encoder import BUNDLED_DIR
from hotdog_dagster.core.model.evaluation import EVAL_SEED, evaluate_sketch_model
from hotdog_dagster.core.model.training import ARCH, DEFAULT_SEED, train_sketch_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR / f"{ARCH}.safetensors", help="weights file to write")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="training seed (data, init, order)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: the shipped recipe)")
    parser.add_argument("--batch-size", type=int, help="image-caption pairs per step")
    parser.add_argument("--images", type=int, help="distinct training images drawn")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--threads", type=int, help="torch threads; pinned for reproducibility")
    parser.add_argument("--eval-seed", type=int, default=EVAL_SEED, help="held-out seed to evaluate on")
    parser.add_argument("--eval-n", type=int, default=1000, help="held-out images to evaluate on")
    parser.add_argument("--no-eval", action="store_true", help="train only")
    parser.add_argument("--json", type=Path, help="also write the train and eval reports here")
    args = parser.parse_args(argv)

    overrides = {
        k: v
        for k, v in {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "images": args.images,
            "lr": args.lr,
            "threads": args.threads,
        }.items()
        if v is not None
    }
    train = train_sketch_model(args.out, seed=args.seed, **overrides)
    reports: dict[str, object] = {"train": train.to_dict()}
    failures: list[str] = []
    if not args.no_eval:
        evaluation = evaluate_sketch_model(f"open_clip/{ARCH}/{args.out.resolve()}", seed=args.eval_seed, n=args.eval_n)
        print(evaluation.format())
        reports["eval"] = evaluation.to_dict()
        failures = evaluation.failures()
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
