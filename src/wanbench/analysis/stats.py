"""Statistics over repeats: median with min, max and coefficient of variation."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

CV_LIMIT = 0.05


@dataclass(frozen=True)
class Stat:
    median: float
    min: float
    max: float
    cv: float  # population standard deviation / mean; 0 for one value
    n: int

    @property
    def noisy(self) -> bool:
        return self.cv > CV_LIMIT

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def describe(self, unit: str = "s", digits: int = 2) -> str:
        """'0.48 s (0.44–0.52, CV 8.8%, n=2)': the median with its spread, as the report and the terminal show it."""
        d = digits
        if self.n == 1:
            return f"{self.median:.{d}f} {unit} (n=1)"
        return f"{self.median:.{d}f} {unit} ({self.min:.{d}f}–{self.max:.{d}f}, CV {self.cv:.1%}, n={self.n})"


def summarize(values: list[float]) -> Stat | None:
    if not values:
        return None
    mean = statistics.fmean(values)
    cv = statistics.pstdev(values) / mean if len(values) > 1 and mean else 0.0
    return Stat(statistics.median(values), min(values), max(values), cv, len(values))
