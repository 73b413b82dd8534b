"""The figures of several runs side by side: a table for a terminal, a plot for a file."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .results import Result

def format_table(results: Sequence[Result]) -> str:
    if not results:
        return ""
    names = results[0].members
    header = (
        f"{'strategy':<17} {'launches':>9} {'cache hits':>10} {'builds':>7} {'refused':>8} {'no member':>9} "
        f"{'peak util':>9} {'mean util':>9} {'data-local':>10} {'ready p50':>9} {'ready p95':>9}  "
        f"peak per member ({', '.join(names)})"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        local = "-" if r.data_local_rate is None else f"{100 * r.data_local_rate:.1f}%"
        per_member = " ".join(f"{100 * r.peak[name]:.0f}%" for name in names)
        p50, p95 = ("-" if v is None else f"{v:.0f} s" for v in (r.ready_median, r.ready_p95))
        lines.append(
            f"{r.strategy:<17} {r.launches:>9} {100 * r.hit_rate:>9.1f}% {r.builds:>7} {r.refused:>8} {r.unplaced:>9} "
            f"{100 * r.peak_utilization:>8.1f}% {100 * r.mean_utilization:>8.1f}% {local:>10} {p50:>9} {p95:>9}  "
            f"{per_member}"
        )
    return "\n".join(lines)


def plot(results: Sequence[Result], path: str | Path) -> None:
    """Utilization over time per member, one panel per strategy (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError(
            "--plot needs matplotlib, an optional extra: pip install 'binder-federation[plot]' (or: pip install matplotlib)"
        ) from exc
    figure, axes = plt.subplots(len(results), 1, sharex=True, sharey=True, figsize=(11, 2.8 * len(results)), squeeze=False)
    for ax, result in zip(axes[:, 0], results):
        hours = [t / 3600 for t, _ in result.samples]
        for position, name in enumerate(result.members):
            ax.plot(hours, [100 * u[position] for _, u in result.samples], linewidth=0.8, label=name)
        ax.set_title(
            f"{result.strategy}: cache hits {100 * result.hit_rate:.1f}%, refused {result.refused}, "
            f"peak {100 * result.peak_utilization:.0f}%"
        )
        ax.set_ylabel("pods / quota (%)")
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper left", fontsize="small", ncol=len(results[0].members))
    axes[-1, 0].set_xlabel("hours")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
