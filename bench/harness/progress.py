"""The progress bar of long runs."""
from __future__ import annotations

import sys


class Progress:
    """tqdm on stderr, weighted by rough costs (pairs), with the case being timed as postfix.

    Args:
        total: the sum of the weights the run will report.
        enabled: False draws nothing.
    """

    def __init__(self, total: float, enabled: bool = True):
        from tqdm import tqdm  # installed by scripts/setup.sh
        # In a log (not a terminal) a redraw every few seconds, not ten per second.
        self.bar = tqdm(total=max(total, 1e-9), disable=not enabled, file=sys.stderr,
                        unit="pair", unit_scale=True, dynamic_ncols=True, leave=False,
                        mininterval=0.1 if sys.stderr.isatty() else 5.0,
                        bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")

    @property
    def total(self) -> float:
        return self.bar.total

    @total.setter
    def total(self, value: float) -> None:
        self.bar.total = max(value, 1e-9)

    def update(self, label: str, weight: float = 0.0) -> None:
        """Show ``label`` and advance by ``weight``."""
        self.bar.set_postfix_str(label, refresh=False)
        self.bar.update(weight)

    def clear_line(self) -> None:
        """Before stdout prints on the terminal the bar is drawn on."""
        self.bar.clear()

    def close(self) -> None:
        self.bar.close()
