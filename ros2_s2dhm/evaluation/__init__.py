"""Evaluation: recall tables, cumulative error plots, the evaluation loop (pose files are
:mod:`ros2_s2dhm.datasets.submission`).

- :mod:`.recall` — recall at (0.25, 2°), (0.5, 5°), (5, 10°) per condition, medians, false
  poses; the default of every bound and :class:`~.recall.Bounds` (distances in the map's unit).
- :mod:`.reliability` — the confidence's precision-recall curve; retrieval top-1 / top-k
  accuracy and hub per condition.
- :mod:`.report` — ``results.json``, printed tables, per-stage timing summaries, the cascade's
  expansion.
- :mod:`.plots` — cumulative error PNGs, RANSAC-PnP vs Feature-PnP.
- :mod:`.run` — localize a list of queries, one :class:`~.run.QueryOutcome` per query; the
  per-query table and the retrieval pairs file (hloc's format).
"""
