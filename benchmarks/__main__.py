"""``python -m rayfront.benchmarks``: the same commands as ``rayfront bench``."""

from rayfront.benchmarks.run.bench_cli import app

if __name__ == "__main__":
    app(prog_name="python -m rayfront.benchmarks")
