"""The assets: one group, so the asset graph shows the whole path of a batch and a release."""

GROUP = "cohort"
