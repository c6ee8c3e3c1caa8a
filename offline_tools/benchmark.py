"""Per-stage timing of the localizer (median and p90 over N queries) on CPU and CUDA.

    benchmark [--dataset DIR [--map MAP]] [--weights W] [--devices cpu,cuda]
              [--queries N] [--warmup W] [--out FILE] [localizer options: --image-size S --top-k K ...]
              [--scale-references N [N ...]] [--backbone-variants NAME [NAME ...] | all]

Without ``--dataset`` it generates a small synthetic set (RobotCar Seasons layout) and
builds its map in ``--work-dir`` (a temporary folder by default); with ``--dataset`` but
no ``--map`` it builds the map of that dataset there. The map is built once, on the first
device, and every device localizes the same N queries (spread over the query list,
repeated when there are fewer). Images are read before timing; the first W queries of
each device are warm-up runs and are not counted. CUDA stages are synchronised by the
localizer, so each stage is charged its own work. ``--devices auto`` (default) means cpu,
plus cuda when available. Prints a table and writes JSON (``--out``, default
``benchmark.json``). Per device it also reports how far the cascade went (JSON ``cascade``):
how many timed queries verified more references than the first ``cascade_batch`` and more
than ``top_k`` (the ``retrieval_extra`` look further), and the median / largest number of
references verified per query; the time of a query follows that count.

The defaults (tiny synthetic set, 256 px, top-10, 8 queries) take a few minutes on 2 CPU
cores. The GPU target setting is e.g.
``--synthetic-size default --image-size 512 --top-k 30 --devices cuda --queries 100``.
Random weights usually give no matches, so the pnp and refine stages are then missing
from the medians (the tool warns); time those with trained weights.

It times a yardstick in the same run: fp32 eager torchvision VGG-16 ``features[:29]`` on one
512x384 input, the median of 5 passes after 2 warm-ups, once right before the timed CPU queries
and once after them (JSON ``yardstick_before_ms``, ``yardstick_after_ms``); the CPU query's
median and p90 are printed over their mean (``yardstick_ms``), and a warning when the two
differ by more than 10 % (the machine's speed drifted during the run: compare nothing from it).
Contention mode (``--busy N``): the CPU queries are timed again beside N processes that spin
on the CPU, and every stage is reported idle, contended, and their ratio.

Scale mode (``--scale-references 7000``): the map is replicated on disk to N images
(``reference_map.replicate_map``, in ``--work-dir``), then for each N the tool measures the
time to open it (map + localizer, the node's start-up), the resident memory after opening
and after the timed queries, and the per-stage query times on the first device.

Backbone-variants mode (``--backbone-variants all``, or names from
``ros2_s2dhm.features.backbone_variants.VARIANTS``: fp32 channels_last bf16_autocast compile
onnxruntime int8): on the CPU, each variant of the network's encoder pass is (a) timed alone on
the warm-up and timed queries at the localizer's image size (first call apart: compilation;
median and p90 over the timed queries) and (b) run in the whole localizer on the same queries;
its final poses are compared query by query with the fp32 variant's (always run first), over the
queries both localized. ``int8`` is calibrated on a few reference images of the dataset. A
variant that cannot run here (a compiler or package missing) shows its error in its row; one
slower than ``--variant-budget-s`` per phase runs fewer queries (its row says how many). Printed
as a table, written under ``backbone_variants`` in the JSON.
"""
from __future__ import annotations

import argparse
import logging
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ros2_s2dhm.datasets import load_dataset, read_image
from ros2_s2dhm.datasets.synthetic import generate_synthetic
from ros2_s2dhm.errors import S2DHMError
from ros2_s2dhm.evaluation import backbone_timing
from ros2_s2dhm.evaluation import report as rep
from ros2_s2dhm.evaluation.run import evaluate_queries
from ros2_s2dhm.features import backbone_variants
from ros2_s2dhm.features.checkpoints import load_network
from ros2_s2dhm.features.preprocess import prepare_image
from ros2_s2dhm.localizer import LocalizerConfig
from ros2_s2dhm.map_builder import MapBuildConfig, build_reference_map
from ros2_s2dhm.runtime import build_localizer
from offline_tools.common import add_localizer_args, localizer_options, resolve_device, resolve_weights

log = logging.getLogger("benchmark")
BUILD_IMAGE_SIZE = 256  # default size of a map the tool builds: minutes on 2 CPU cores; use 512 on a GPU


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmark", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:]))
    p.add_argument("--dataset", type=Path, help="dataset root; default: a generated synthetic set")
    p.add_argument("--map", type=Path, help="map of --dataset; default: built in --work-dir")
    p.add_argument("--weights", default="default",
                   help="weights file, 'default' for the shipped weights or 'random' (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated synthetic set")
    p.add_argument("--synthetic-size", default="tiny", choices=("tiny", "default"),
                   help="size of the generated synthetic set (default tiny)")
    p.add_argument("--devices", default="auto",
                   help="comma-separated devices, e.g. cpu,cuda; auto = cpu (+ cuda if available)")
    p.add_argument("--queries", type=int, default=8, help="timed queries per device (default 8)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up queries per device")
    add_localizer_args(p)  # its --image-size also sets the size of a map this tool builds
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--work-dir", type=Path, help="where the synthetic set and map are written")
    p.add_argument("--out", type=Path, default=Path("benchmark.json"), help="JSON output file")
    p.add_argument("--scale-references", type=int, nargs="+", default=[], metavar="N",
                   help="also time maps replicated to N reference images (open time, RSS, queries)")
    p.add_argument("--busy", type=int, default=0, metavar="N",
                   help="contention mode: time the CPU queries again beside N busy processes "
                        "(one per core: the CPU shared with drivers, planners, SLAM) and report "
                        "every stage idle and contended")
    p.add_argument("--backbone-variants", nargs="+", default=[], metavar="NAME",
                   help="time these ways of running the network on the CPU and compare their poses "
                        f"with fp32's: {' '.join(backbone_variants.VARIANTS)} or all")
    p.add_argument("--variant-budget-s", type=float, default=600.0, metavar="S",
                   help="wall time per variant and phase (forward, localizer) after which a slow "
                        "variant runs no more queries (default %(default)s)")
    p.add_argument("--calibration-images", type=int, default=8, metavar="N",
                   help="reference images that calibrate the int8 variant (default %(default)s)")
    p.add_argument("--no-yardstick", action="store_true",
                   help="skip the yardstick (torchvision VGG-16 features[:29], fp32, 512x384)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


class Yardstick:
    """fp32 eager torchvision VGG-16 ``features[:29]`` (through conv5_3's ReLU) on one 512x384
    input on the CPU: what a query is judged against, timed in the same run on the same machine
    (``before_ms`` / ``after_ms``: the timed queries' bracket, set by :func:`time_queries`)."""

    DRIFT = 0.10  # before and after further apart than this (relative): the machine drifted

    def __init__(self):
        from torchvision.models import vgg16  # noqa: PLC0415

        self.net = vgg16(weights=None).features[:29].eval()
        self.input = torch.rand(1, 3, 384, 512)
        self.before_ms: float | None = None
        self.after_ms: float | None = None

    @torch.no_grad()
    def median_ms(self, repeats: int = 5, warmup: int = 2) -> float:
        """Median ms of ``repeats`` passes after ``warmup`` untimed ones."""
        times = []
        for i in range(warmup + repeats):
            start = time.perf_counter()
            self.net(self.input)
            if i >= warmup:
                times.append(1e3 * (time.perf_counter() - start))
        return float(np.median(times))

    def bracket_ms(self) -> float | None:
        """The mean of before and after (None unless both were timed)."""
        if self.before_ms is None or self.after_ms is None:
            return None
        return 0.5 * (self.before_ms + self.after_ms)

    def drifted(self) -> bool:
        """Whether before and after differ by more than :attr:`DRIFT` of their mean."""
        mean = self.bracket_ms()
        return mean is not None and abs(self.before_ms - self.after_ms) > self.DRIFT * mean


def yardstick_ms(repeats: int = 5, warmup: int = 2) -> float:
    """Median ms of ``repeats`` yardstick passes (:class:`Yardstick`) after ``warmup``."""
    return Yardstick().median_ms(repeats, warmup)


def _spin_forever() -> None:  # pragma: no cover - runs in the busy processes
    while True:
        pass


class BusyProcesses:
    """``n`` processes spinning on the CPU for the time of a ``with`` block."""

    def __init__(self, n: int):
        import multiprocessing  # noqa: PLC0415

        self._ctx = multiprocessing.get_context("spawn")
        self.n, self.procs = n, []

    def __enter__(self):
        self.procs = [self._ctx.Process(target=_spin_forever, daemon=True) for _ in range(self.n)]
        for proc in self.procs:
            proc.start()
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.terminate()
            proc.join(timeout=10)


def format_contention(idle: dict, busy: dict, n: int) -> str:
    """Every stage's median idle, beside N busy processes, and their ratio."""
    lines = [f"{'stage [ms]':<12} | {'idle':>8} | {f'{n} busy':>8} | ratio",
             "-" * 42]
    for stage, s in idle.items():
        b = busy.get(stage)
        if b is None:
            continue
        lines.append(f"{stage:<12} | {s['median']:>8.1f} | {b['median']:>8.1f} | "
                     f"{b['median'] / s['median']:.2f}x")
    return "\n".join(lines)


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc, else the peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def benchmark_scale(args, device: str, map_dir: Path, work_dir: Path, warm: list, timed: list,
                    images: dict) -> list[dict]:
    """Open time, RSS and query times of maps replicated to each ``--scale-references`` size."""
    import gc
    import time

    from ros2_s2dhm.reference_map import ReferenceMap, replicate_map

    source = ReferenceMap.load(map_dir)
    rows = []
    for n in args.scale_references:
        scaled = work_dir / f"map_x{n}"
        log.info("replicating the map to %d reference images in %s", n, scaled)
        replicate_map(source, scaled, n)
        size_mb = sum(f.stat().st_size for f in scaled.iterdir() if f.is_file()) / 1e6
        gc.collect()
        rss_before = rss_mb()
        t0 = time.perf_counter()
        localizer, _ = build_localizer(scaled, args.weights, device, **localizer_options(args))
        open_s = time.perf_counter() - t0
        rss_open = rss_mb()
        evaluate_queries(localizer, warm, images.__getitem__, progress=False)
        outcomes = evaluate_queries(localizer, timed, images.__getitem__, progress=False)
        stages = rep.summarize_timings([o.timings_ms for o in outcomes])
        rows.append({"references": n, "map_mb": size_mb, "mb_per_reference": size_mb / n,
                     "open_s": open_s, "rss_before_mb": rss_before, "rss_open_mb": rss_open,
                     "rss_after_queries_mb": rss_mb(), "localized": sum(o.success for o in outcomes),
                     "queries": len(outcomes), "stages": stages})
        del localizer
        shutil.rmtree(scaled, ignore_errors=True)
    return rows


def format_scale_table(rows: list[dict]) -> str:
    head = (f"{'references':>10} {'map MB':>8} {'MB/ref':>7} {'open s':>7} {'RSS open MB':>12} "
            f"{'RSS end MB':>11} {'matching ms':>12} {'total ms':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        st = r["stages"]
        lines.append(f"{r['references']:>10} {r['map_mb']:>8.0f} {r['mb_per_reference']:>7.3f} "
                     f"{r['open_s']:>7.2f} {r['rss_open_mb']:>12.0f} {r['rss_after_queries_mb']:>11.0f} "
                     f"{st.get('matching', {}).get('median', float('nan')):>12.1f} "
                     f"{st.get('total', {}).get('median', float('nan')):>9.1f}")
    return "\n".join(lines)


def resolve_devices(spec: str) -> list[str]:
    """``auto`` -> cpu (+ cuda); explicit cuda without CUDA is skipped with a warning."""
    names = ["cpu", "cuda"] if spec == "auto" else [d.strip() for d in spec.split(",") if d.strip()]
    devices = []
    for name in names:
        try:
            devices.append(resolve_device(name))
        except ValueError as err:
            if spec != "auto":
                log.warning("device %s skipped: %s", name, err)
    if not devices:
        raise S2DHMError(f"--devices {spec}: none of these devices is available")
    return devices


def device_name(device: str) -> str:
    """GPU name, or the CPU model with the number of torch threads."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def pick_queries(queries: list, n: int, warmup: int) -> tuple[list, list]:
    """(warm-up, timed) queries: ``n`` spread over the list (cycled if short), warm-up first."""
    if not queries:
        raise S2DHMError("the dataset has no queries to time")
    spread = [queries[i] for i in np.linspace(0, len(queries) - 1, min(n, len(queries))).round().astype(int)]
    timed = [spread[i % len(spread)] for i in range(n)]
    return [timed[i % len(timed)] for i in range(warmup)], timed


def prepare_map(args, work_dir: Path, build_device: str):
    """(dataset, map directory): given, or generated / built in ``work_dir``."""
    if args.dataset is None:
        data_dir = work_dir / f"synthetic_{args.synthetic_size}_{args.seed}"
        log.info("generating a %s synthetic set in %s", args.synthetic_size, data_dir)
        generate_synthetic(data_dir, seed=args.seed, size=args.synthetic_size)
        dataset = load_dataset(data_dir)
    else:
        dataset = load_dataset(args.dataset)
    if args.map is not None:
        return dataset, args.map
    map_dir = work_dir / "map"
    network, info = load_network(resolve_weights(args.weights), device=build_device)
    config = MapBuildConfig(image_size=args.image_size or BUILD_IMAGE_SIZE)
    log.info("building the map of %d reference images in %s", len(dataset.references), map_dir)
    build_reference_map(dataset, network, info.sha256, info.kind, map_dir, config,
                        device=build_device, progress=not args.quiet)
    return dataset, map_dir


def time_queries(localizer, warm: list, timed: list, images: dict, label: str,
                 progress: bool = False, yardstick: Yardstick | None = None) -> tuple[list, dict]:
    """Localize the warm-up queries (untimed), then the timed ones: (their outcomes, summary
    ``{"queries", "localized", "stages", "cascade", "per_query"}``; ``per_query``: each timed
    query's name, condition, success, confidence, references verified and total ms, in order,
    so that the p90 can be traced to the frames that set it). With a ``yardstick``, it is
    timed (:meth:`Yardstick.median_ms`) right before and right after the timed queries."""
    evaluate_queries(localizer, warm, images.__getitem__, progress=False)
    if yardstick is not None:
        yardstick.before_ms = yardstick.median_ms()
    outcomes = evaluate_queries(localizer, timed, images.__getitem__, progress=progress)
    if yardstick is not None:
        yardstick.after_ms = yardstick.median_ms()
    localized = sum(o.success for o in outcomes)
    if localized < len(outcomes):
        log.warning("%s: %d of %d queries failed; their later stages (pnp, refine) are missing "
                    "from the medians", label, len(outcomes) - localized, len(outcomes))
    return outcomes, {
        "queries": len(outcomes), "localized": localized,
        "stages": rep.summarize_timings([o.timings_ms for o in outcomes]),
        "cascade": rep.cascade_expansion(outcomes, localizer.config.cascade_batch,
                                         localizer.config.top_k),
        "per_query": [{"name": o.name, "condition": o.condition, "success": o.success,
                       "confidence": float(o.confidence),
                       "references_verified": len(o.reference_names),
                       "total_ms": o.timings_ms.get("total")} for o in outcomes]}


def benchmark_device(args, device: str, map_dir: Path, warm: list, timed: list, images: dict,
                     yardstick: Yardstick | None = None) -> dict:
    """Time the localizer on ``device`` (bracketed by the ``yardstick`` when given, see
    :func:`time_queries`); returns the per-device JSON entry."""
    localizer, info = build_localizer(map_dir, args.weights, device, **localizer_options(args))
    _, summary = time_queries(localizer, warm, timed, images, device, progress=not args.quiet,
                              yardstick=yardstick)
    total = summary["stages"].get("total", {}).get("median", float("nan"))
    return {"name": device_name(device), "image_size": localizer.image_size, **summary,
            "hz_median": 1e3 / total if total > 0 else None,
            "weights": rep.describe_weights(info)}


def benchmark_backbone_variants(args, dataset, map_dir: Path, warm: list, timed: list,
                                images: dict) -> list[dict]:
    """``--backbone-variants``: per variant, the forward alone on the queries' network inputs,
    then the localizer with it on the same queries; poses compared with fp32's (JSON rows)."""
    names = backbone_variants.resolve_variant_names(args.backbone_variants)
    localizer, _ = build_localizer(map_dir, args.weights, "cpu", **localizer_options(args))
    network, size, budget = localizer.model, localizer.image_size, args.variant_budget_s
    runner = localizer.network  # what the localizer runs at its backbone_runtime
    inputs = [prepare_image(images[q.path], size)[0] for q in warm + timed]
    options = backbone_timing.localizer_call_options(localizer, images[timed[0].path], timed[0].camera)
    calibration = None
    if "int8" in names:
        refs = pick_queries(dataset.references, args.calibration_images, 0)[1]
        calibration = [prepare_image(read_image(r.path), size)[0] for r in refs]
    rows, reference = [], {}
    for name in names:
        log.info("backbone variant %s", name)
        try:
            t0 = time.perf_counter()
            variant = backbone_variants.build_variant(name, network, calibration or inputs[:1])
            build_s = time.perf_counter() - t0
            forward = backbone_timing.time_forward(variant, inputs, len(warm), budget, **options)
        except backbone_variants.VariantUnavailable as err:
            if name == backbone_variants.REFERENCE:
                raise
            log.warning("backbone variant %s not run: %s", name, err)
            rows.append({"variant": name, "image_size": size, "error": str(err)})
            continue
        # a variant too slow for the budget: no warm-ups (timing warmed it), fewer queries
        fits = max(1, int(1e3 * budget / forward["median"]))
        run_warm, run_timed = (warm, timed) if len(warm) + len(timed) <= fits else ([], timed[:fits])
        localizer.network = variant
        try:
            outcomes, run = time_queries(localizer, run_warm, run_timed, images, name,
                                         progress=not args.quiet)
        finally:
            localizer.network = runner
        if name == backbone_variants.REFERENCE:
            reference = {"forward": forward, "outcomes": outcomes}
        deltas = backbone_timing.pose_deltas(reference["outcomes"], outcomes)
        rows.append({**backbone_timing.variant_row(name, build_s, forward, reference["forward"],
                                                   run, deltas), "image_size": size})
    return rows


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = resolve_devices(args.devices)
    with tempfile.TemporaryDirectory(prefix="s2dhm_benchmark_") as tmp:
        work_dir = args.work_dir or Path(tmp)
        dataset, map_dir = prepare_map(args, work_dir, devices[0])
        warm, timed = pick_queries(dataset.queries, args.queries, args.warmup)
        images = {q.path: read_image(q.path) for q in warm + timed}
        bracket_by = None if args.no_yardstick or "cpu" not in devices else Yardstick()
        results = {d: benchmark_device(args, d, map_dir, warm, timed, images,
                                       bracket_by if d == "cpu" else None) for d in devices}
        contended = None
        if args.busy and "cpu" in devices:
            with BusyProcesses(args.busy):
                contended = benchmark_device(args, "cpu", map_dir, warm, timed, images)
        scale = (benchmark_scale(args, devices[0], map_dir, work_dir, warm, timed, images)
                 if args.scale_references else [])
        variants = (benchmark_backbone_variants(args, dataset, map_dir, warm, timed, images)
                    if args.backbone_variants else [])
    content = {
        "dataset": str(args.dataset) if args.dataset else f"synthetic {args.synthetic_size} seed {args.seed}",
        "map": str(args.map) if args.map else "built by the benchmark",
        "top_k": args.top_k or LocalizerConfig.top_k, "queries": args.queries, "warmup": args.warmup,
        "torch": torch.__version__, "devices": results,
    }
    if scale:
        content["scale"] = {"device": devices[0], "maps": scale}
    if contended is not None:
        content["contended"] = {"busy_processes": args.busy, "cpu": contended}
    if variants:
        content["backbone_variants"] = variants
    bracket = bracket_by.bracket_ms() if bracket_by else None
    yardstick = bracket if bracket is not None else (None if args.no_yardstick else yardstick_ms())
    content["yardstick_ms"] = yardstick
    content["yardstick_before_ms"] = bracket_by.before_ms if bracket_by else None
    content["yardstick_after_ms"] = bracket_by.after_ms if bracket_by else None
    content["yardstick_drifted"] = bool(bracket_by and bracket_by.drifted())
    content["threads"] = torch.get_num_threads()
    rep.write_json(args.out, content)
    print()
    print(rep.format_timing_table({d: r["stages"] for d, r in results.items()}))
    if yardstick is not None:
        total = results.get("cpu", {}).get("stages", {}).get("total")
        ratio = (f"; the CPU query: median {total['median'] / yardstick:.2f}x, p90 "
                 f"{total['p90'] / yardstick:.2f}x" if total else "")
        where = (f"mean of {bracket_by.before_ms:.0f} ms before and {bracket_by.after_ms:.0f} ms "
                 "after the CPU queries" if bracket is not None else "after the queries")
        print(f"yardstick (fp32 VGG-16 features[:29], 512x384, CPU, {torch.get_num_threads()} "
              f"threads): {yardstick:.0f} ms ({where}){ratio}")
        if content["yardstick_drifted"]:
            print(f"warning: the yardstick moved by more than {Yardstick.DRIFT:.0%} during the "
                  "run (the machine's speed drifted): do not compare its timings; run it again")
    if contended is not None:
        print(f"\ncpu beside {args.busy} busy process(es):\n"
              + format_contention(results["cpu"]["stages"], contended["stages"], args.busy))
    for d, r in results.items():
        hz = f"{r['hz_median']:.1f} Hz" if r["hz_median"] else "n/a"
        print(f"{d}: {r['name']}; image size {r['image_size']}, top-{content['top_k']}, "
              f"{r['localized']}/{r['queries']} localized ({r['queries'] - r['localized']} "
              f"refused, {100 * (r['queries'] - r['localized']) / max(1, r['queries']):.0f} %), "
              f"{hz} (median total); weights: {r['weights']}")
        print(f"{d}: " + rep.format_cascade_expansion(r["cascade"]))
    if scale:
        print(f"\nscale ({devices[0]}):\n" + format_scale_table(scale))
    if variants:
        print(f"\nbackbone variants (cpu, {torch.get_num_threads()} threads, image size "
              f"{variants[0]['image_size']}):\n" + backbone_timing.format_variants_table(variants))
    print(f"written to {args.out}")
    return content


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(args)
    except S2DHMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
