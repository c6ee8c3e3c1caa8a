"""Check a map directory completely: `verify_map MAP`.

Opening a map (node, evaluate, benchmark) checks the manifest, shapes, dtypes and file sizes
only; this reads every array file and compares its sha256 with the one written at build time.
Exit status 0 when the map is intact, 2 with the first bad file named otherwise.
"""
from __future__ import annotations

import argparse
import sys
import time

from ros2_s2dhm.errors import S2DHMError
from ros2_s2dhm.reference_map import ReferenceMap


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="verify_map", description=__doc__.split("\n")[0])
    p.add_argument("map", help="map directory (build_map --out)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        ref_map = ReferenceMap.load(args.map)
        checked = ReferenceMap.verify(args.map)
    except S2DHMError as e:
        print(f"verify_map: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.map}: {len(ref_map)} images, {checked} array files match their sha256 "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
