"""Time the README's quick start from an empty FREEBIND_HOME (pools generated, every item
embedded, both jobs trained), against the 3-minute target, then a second run on the warm
cache (nothing re-encoded or retrained).

    .venv/bin/python benchmarks/bench_quickstart.py
"""

import os
import subprocess
import sys
import tempfile
import time

EXPR = "mini:bind + d(mini:vl) + c(mini:clap)"
TARGET_S = 180.0


def run(home: str, cwd: str) -> float:
    env = {**os.environ, "FREEBIND_HOME": home}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "freebind_cli.main", "build", EXPR, "-q"], cwd=cwd,
                   env=env, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cold = run(os.path.join(tmp, "home"), tmp)
        warm = run(os.path.join(tmp, "home"), tmp)
    print(f"quick start, empty cache: {cold:.1f} s = {cold / TARGET_S:.2f} x the "
          f"{TARGET_S:.0f} s target ({'met' if cold < TARGET_S else 'NOT met'})")
    print(f"quick start, warm cache:  {warm:.1f} s = {warm / cold:.2f} x the cold run")


if __name__ == "__main__":
    main()
