"""What a check found: findings, each naming the field, sample, site or contig, and the report."""

from __future__ import annotations

import dataclasses

SEVERITIES = ("error", "warning", "info")


@dataclasses.dataclass(frozen=True)
class Finding:
    id: str
    severity: str
    concern: str  # variants | fields | samples | layout | source
    message: str
    # The same without any sample ID, for logs, Dagster metadata and anything else that is kept.
    safe_message: str | None = None

    @property
    def public_message(self) -> str:
        return self.safe_message if self.safe_message is not None else self.message


@dataclasses.dataclass
class CompatibilityReport:
    findings: list[Finding]
    num_samples: int = 0
    fast_path: bool = False
    plan: object | None = None  # the VariantPlan the coverage figures come from

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def by_concern(self, concern: str) -> list[Finding]:
        return [f for f in self.findings if f.concern == concern]

    def summary(self) -> str:
        if self.ok:
            return f"compatible: {self.num_samples} samples; {len(self.warnings)} warning(s)"
        return "; ".join(f.message for f in self.errors)

    def public_summary(self) -> str:
        """The summary with no sample ID in it."""
        if self.ok:
            return self.summary()
        return "; ".join(f.public_message for f in self.errors)


def refusal(name: str, errors) -> str:
    """One line refusing batch ``name`` for its error findings."""
    return f"batch {name} refused: " + "; ".join(
        f.message.removeprefix(f"batch {name}: ").removeprefix(f"batch {name} ") for f in errors)
