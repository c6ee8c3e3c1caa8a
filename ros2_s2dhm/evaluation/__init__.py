"""Evaluation: submission files, recall tables, cumulative error plots, the evaluation loop.

- :mod:`.submission` — visuallocalization.net pose files (``name qw qx qy qz tx ty tz``).
- :mod:`.recall` — recall at (0.25 m, 2°), (0.5 m, 5°), (5 m, 10°) per condition, medians.
- :mod:`.report` — ``results.json``, printed tables, per-stage timing summaries.
- :mod:`.plots` — cumulative error PNGs, RANSAC-PnP vs Feature-PnP.
- :mod:`.run` — localize a list of queries, one :class:`~.run.QueryOutcome` per query.
"""
