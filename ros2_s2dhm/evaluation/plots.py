"""Cumulative pose-error plots (PNG), one per condition, RANSAC-PnP vs Feature-PnP.

Each figure has two panels: the percentage of queries whose translation error
(left) or rotation error (right) is at most x, on a logarithmic x axis, in percent
of all queries of the condition — failed queries never reach the curve, so its
plateau is the fraction localized. The recall thresholds are drawn as vertical lines.
Translation errors are in the map's ``unit`` (metres for a metric map).
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ros2_s2dhm.evaluation.recall import METHOD_LABELS, RecallReport  # noqa: E402


def _cumulative(ax, errors: np.ndarray, label: str, lo: float, hi: float) -> None:
    n = errors.size
    finite = np.sort(errors[np.isfinite(errors)])
    x = np.concatenate([[lo], np.clip(finite, lo, hi), [hi]])
    y = 100.0 * np.concatenate([[0.0], np.arange(1, finite.size + 1) / max(n, 1),
                                [finite.size / max(n, 1)]])
    ax.step(x, y, where="post", label=label)


def plot_cumulative_errors(report: RecallReport, path: str | Path, condition: str | None = None,
                           unit: str = "m") -> Path:
    """Write the cumulative error plot of ``condition`` (``None``: all queries) to ``path``;
    translation errors in the map's ``unit``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    t_thr = [t for t, _ in report.thresholds]
    r_thr = [r for _, r in report.thresholds]
    panels = ((axes[0], 0, f"translation error [{unit}]", (1e-3, 1e2), t_thr),
              (axes[1], 1, "rotation error [deg]", (1e-2, 1.8e2), r_thr))
    n = 0
    for ax, idx, xlabel, (lo, hi), thr in panels:
        for method in report.methods:
            errors = report.group_errors(method, condition)[idx]
            n = errors.size
            _cumulative(ax, errors, METHOD_LABELS.get(method, method), lo, hi)
        for x in thr:
            ax.axvline(x, color="0.7", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(0, 100)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("queries localized [%]")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="best")
    fig.suptitle(f"{condition or 'all conditions'} ({n} queries)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_all_conditions(report: RecallReport, out_dir: str | Path, unit: str = "m") -> list[Path]:
    """One ``cumulative_<condition>.png`` per condition plus ``cumulative_all.png`` in ``out_dir``;
    translation errors in the map's ``unit``."""
    out_dir = Path(out_dir)
    paths = []
    for condition in [*report.conditions, None]:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", condition or "all")
        paths.append(plot_cumulative_errors(report, out_dir / f"cumulative_{stem}.png", condition,
                                            unit))
    return paths
