"""Progress bars for management commands (tqdm on stderr, one bar per stage)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class StageProgress:
    """``callable(stage, done, total)`` that draws one tqdm bar per stage."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty() or enabled == "always"
        self.bars: dict[str, tqdm] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit="row", file=sys.stderr, leave=True)
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.n = bar.total
            bar.close()
        self.bars.clear()
