"""Generate a synthetic RobotCar-Seasons-like dataset with exact ground truth.

    make_synthetic --out DIR [--seed 0] [--size default|tiny] [--conditions sun,night,...]
                   [--width W --height H] [--length M] [--layout robotcar|colmap]

Writes images/, intrinsics/, 3D-models/all-merged/all.nvm, ground_truth.txt, queries/ and
correspondences/ (see ros2_s2dhm.datasets.synthetic.generate). Held-out sets use another --seed.
``--layout colmap`` writes the same set as a user's own site instead: a binary COLMAP model in
sparse/, images/, queries_with_intrinsics.txt and ground_truth.txt (datasets/colmap_layout.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from ros2_s2dhm.datasets.synthetic import CONDITIONS, SIZES, generate_synthetic
from ros2_s2dhm.errors import S2DHMError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--seed", type=int, default=0, help="scene, traversal and noise seed (default %(default)s)")
    p.add_argument("--size", choices=sorted(SIZES), default="default", help="preset (default %(default)s)")
    p.add_argument("--conditions", default=None,
                   help=f"comma-separated query conditions (default: the preset's); from {sorted(CONDITIONS)}")
    p.add_argument("--width", type=int, default=None, help="image width override")
    p.add_argument("--height", type=int, default=None, help="image height override")
    p.add_argument("--queries-per-condition", type=int, default=None, help="override of the preset")
    p.add_argument("--length", type=float, default=None,
                   help="metres of street (override of the preset; 120 gives 81 references at 1.5 m)")
    p.add_argument("--layout", choices=("robotcar", "colmap"), default="robotcar",
                   help="RobotCar Seasons layout (default) or a generic COLMAP layout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    size = SIZES[args.size]
    overrides = {k: v for k, v in (("width", args.width), ("height", args.height),
                                   ("queries_per_condition", args.queries_per_condition),
                                   ("length", args.length)) if v is not None}
    if overrides:
        size = dataclasses.replace(size, **overrides)
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()] if args.conditions else None
    try:
        if args.layout == "colmap":
            return _colmap_site(args, size, conditions)
        result = generate_synthetic(args.out, seed=args.seed, size=size, conditions=conditions,
                                    progress=not args.quiet)
    except S2DHMError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {result.root}: {len(result.references)} reference images, {len(result.queries)} queries, "
          f"{result.num_points} 3D points, {result.num_correspondence_files} correspondence files "
          f"in {result.seconds:.1f} s")
    return 0


def _colmap_site(args, size, conditions) -> int:
    """Generate in a temporary folder, then write the COLMAP layout at --out."""
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from ros2_s2dhm.datasets import load_dataset  # noqa: PLC0415
    from ros2_s2dhm.datasets.colmap_layout import write_colmap_layout  # noqa: PLC0415
    from ros2_s2dhm.datasets.submission import read_submission  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        source = generate_synthetic(Path(tmp) / "set", seed=args.seed, size=size,
                                    conditions=conditions, progress=not args.quiet).root
        dataset = load_dataset(source)
        out = write_colmap_layout(dataset, args.out, read_submission(source / "ground_truth.txt"))
    print(f"wrote {out} (COLMAP layout): {len(dataset.references)} reference images, "
          f"{len(dataset.queries)} queries, {len(dataset.points3d)} 3D points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
