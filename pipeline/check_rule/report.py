"""The report of the conformance kit: one :class:`Check` a line (``PASS``/``FAIL``/``WARN``)."""

from __future__ import annotations

from dataclasses import dataclass, field

PASS, FAIL, WARN = "PASS", "FAIL", "WARN"


@dataclass
class Check:
    name: str
    status: str  # PASS | FAIL | WARN
    message: str

    def line(self) -> str:
        return f"{self.status} {self.name}: {self.message}"


@dataclass
class Report:
    target: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def add(self, name: str, status: str, message: str) -> None:
        self.checks.append(Check(name, status, message))

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def text(self) -> str:
        return "\n".join(c.line() for c in self.checks)
