"""The assets: one group, so the asset graph shows the whole path of a batch and a release."""

GROUP = "cohort"
OWNERS = ["team:cohort-data"]
"""Who answers for the store (shown on every asset in the UI)."""
