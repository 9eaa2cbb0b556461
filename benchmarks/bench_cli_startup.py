"""Time ``freebind --help`` (target: under 0.5 s) against a bare interpreter and a bare
``import typer``, best of N runs each, and list the heavy libraries it imported (none).

    .venv/bin/python benchmarks/bench_cli_startup.py [N]"""

import subprocess
import sys
import time


def best(args, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return min(times)


def main(n=7):
    py = sys.executable
    bare = best([py, "-c", "pass"], n)
    typer = best([py, "-c", "import typer"], n)
    cli = best([py, "-c", "import sys; sys.argv = ['freebind', '--help']\n"
                          "from freebind_cli.main import main\ntry:\n    main()\n"
                          "except SystemExit:\n    pass"], n)
    heavy = subprocess.run(
        [py, "-c", "import sys; sys.argv = ['freebind', '--help']\n"
                   "from freebind_cli.main import app\ntry:\n    app()\nexcept SystemExit:\n"
                   "    pass\nprint(','.join(m for m in ('torch', 'numpy', 'transformers') "
                   "if m in sys.modules), file=sys.stderr)"],
        capture_output=True, text=True).stderr.strip()
    print(f"python -c pass      {bare:.3f} s")
    print(f"import typer        {typer:.3f} s")
    print(f"freebind --help     {cli:.3f} s  (freebind's own share {cli - typer:.3f} s)")
    print(f"heavy imports: {heavy or 'none'}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
