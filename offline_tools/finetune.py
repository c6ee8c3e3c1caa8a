"""Fine-tune the VGG-16 backbone on pixel correspondences (double-margin contrastive + Gauss-Newton loss).

    finetune --correspondences CORR_DIR --images-root DATASET/images --out RUN_DIR
             [--weights W] [--condition-pairs overcast-reference:night] [--steps N] [--resume auto]

Multi-GPU: ``torchrun --nproc_per_node=G -m offline_tools.finetune ...`` (same flags).
Writes RUN_DIR/weights.pth (loadable wherever --weights is accepted), last.pth (training
state for --resume), checkpoints/, losses.csv and loss_curves.png.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from offline_tools.common import (add_config_args, add_weights_args, config_from_args,
                                  resolve_device, resolve_weights)
from ros2_s2dhm.errors import S2DHMError
from ros2_s2dhm.features.checkpoints import load_network
from ros2_s2dhm.training.data import CorrespondencePairDataset, find_correspondence_files, parse_condition_pairs
from ros2_s2dhm.training.trainer import TrainConfig, init_distributed, train


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--correspondences", nargs="+", required=True,
                        help="correspondence .mat files or folders (searched recursively)")
    parser.add_argument("--images-root", required=True, help="folder the image paths in the .mat files resolve against")
    parser.add_argument("--out", required=True, help="run folder (weights, checkpoints, logs)")
    add_weights_args(parser)
    parser.add_argument("--condition-pairs", nargs="*", default=None, metavar="A:B",
                        help="keep only these unordered condition pairs, e.g. overcast-reference:night ('*' = any)")
    parser.add_argument("--min-correspondences", type=int, default=8,
                        help="skip files with fewer correspondences (default %(default)s)")
    parser.add_argument("--resume", default=None,
                        help="training checkpoint to continue from, or 'auto' for OUT/last.pth when present")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--half", action="store_true", help="write weights.pth in float16 (half the size)")
    add_config_args(parser, TrainConfig, "training hyperparameters (defaults: TrainConfig's)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        config = config_from_args(TrainConfig, args)
    except S2DHMError as error:
        print(f"finetune: error: {error}", file=sys.stderr)
        return 2
    resume = args.resume
    if resume == "auto":
        last = Path(args.out) / "last.pth"
        resume = last if last.is_file() else None
    try:
        ctx = init_distributed(resolve_device(args.device))
        files = find_correspondence_files(args.correspondences)
        dataset = CorrespondencePairDataset(files, args.images_root, config.image_size,
                                            parse_condition_pairs(args.condition_pairs), args.min_correspondences)
        network, info = load_network(resolve_weights(args.weights), ctx.device, config.seed)
        result = train(network, dataset, config, args.out, ctx, resume=resume, progress=not args.no_progress,
                       tensorboard=args.tensorboard, half_weights=args.half,
                       weights_meta={"init_kind": info.kind, "init_sha256": info.sha256,
                                     "condition_pairs": args.condition_pairs or [], "num_pairs": len(dataset)})
    except (S2DHMError, ValueError) as error:
        print(f"finetune: error: {error}", file=sys.stderr)
        return 2
    if ctx.is_main:
        print(f"fine-tuned {result.steps} steps on {len(dataset)} pairs -> {result.weights} "
              f"(log {result.log_csv}, curves {result.plot})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
