"""Run every benchmark in bench/ (``bench_<group>.py``), or only the groups named.

Usage: python bench/run.py [group ...]     e.g. python bench/run.py mlcore
Each benchmark prints one line per figure: ``name: value unit``.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(groups: list[str]) -> int:
    available = {path.stem.removeprefix("bench_"): path for path in sorted(HERE.glob("bench_*.py"))}
    unknown = [g for g in groups if g not in available]
    if unknown:
        print(f"unknown benchmark group(s): {', '.join(unknown)}; available: {', '.join(available)}", file=sys.stderr)
        return 2
    status = 0
    for group in groups or list(available):
        print(f"# {group}", flush=True)
        status |= subprocess.call([sys.executable, str(available[group])], cwd=HERE.parent)
    return status


if __name__ == "__main__":
    sys.exit(main([arg for arg in sys.argv[1:] if arg]))
