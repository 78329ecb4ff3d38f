"""A small real analysis that reads a JSONL-like list of numbers and stops with DiagError at a malformed line.

It checkpoints its running sum before each line, so the failure leaves a resumable run behind: the case where the
run store alone cannot say why a run stopped and the audit must carry the error into the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diag.contract import Analysis
from diag.errors import DiagError
from diag.progress import Progress
from diag.report.sections import Guide
from diag.run_dir import Run

GUIDE = Guide(question="What is the sum of the numbers?", limitations=["Stops at the first malformed line."])


@dataclass(frozen=True)
class Config:
    lines: tuple[str, ...] = ("1", "2", "three", "4")


@dataclass
class Result:
    total: float

    def summary(self) -> dict[str, Any]:
        return {"total": self.total}

    def save(self, run: Run) -> None:
        run.write_json("total.json", {"total": self.total})

    @classmethod
    def load(cls, run: Run) -> Result:
        return cls(run.read_json("total.json")["total"])


def compute(config: Config, run: Run, progress: Progress) -> Result:
    total = 0.0
    for number, line in enumerate(config.lines, start=1):
        run.save_checkpoint({"line": number, "total": total})
        try:
            total += float(line)
        except ValueError as exc:
            raise DiagError(f"line {number} is not a number: {line!r}") from exc
        progress(number, len(config.lines), "summing")
    return Result(total)


def audit_config(scale: float = 1.0) -> Config:
    return Config()



ANALYSIS = Analysis(name="halting", config=Config, result=Result, compute=compute, audit_config=audit_config,
                    guide=GUIDE, description="The sum of the numbers, stopping at a malformed line.")
