"""What the bench shows: a progress line while it runs, the terminal table, the JSON, the roofline plot.

Ratios are peer time / our time: above 1 fastconv is faster, below 1 the peer is.
"""

from __future__ import annotations

import json
import shutil
import sys
import time

# --------------------------------------------------------------------------------------------
# Progress


class Progress:
    """One stderr line redrawn with \\r on a terminal; one plain line per case otherwise (CI logs)."""

    def __init__(self, stream=None, enabled=True):
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = enabled
        self.total, self.done, self.label, self.t0 = 0, 0, "", time.perf_counter()

    def start(self, total: int, label: str) -> None:
        self.total, self.done, self.label, self.t0 = total, 0, label, time.perf_counter()
        self.status("starting workers")

    def _line(self, text: str) -> str:
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        elapsed = time.perf_counter() - self.t0
        if not self.total:
            return f"fastconv bench: {text}"
        return f"[{bar}] {self.done}/{self.total} {self.label} {elapsed:5.0f}s  {text}"

    def status(self, text: str) -> None:
        if self.tty:
            cols = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r" + self._line(text)[:cols].ljust(cols))
            self.stream.flush()

    def case_done(self, name: str, summary: str) -> None:
        self.done += 1
        if self.tty:
            self.status(f"{name}: {summary}")
        elif self.enabled:
            elapsed = time.perf_counter() - self.t0
            self.stream.write(f"bench {self.label} [{self.done}/{self.total}] {elapsed:.0f}s {name}: {summary}\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            cols = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r" + " " * cols + "\r")
            self.stream.flush()


# --------------------------------------------------------------------------------------------
# Table


def fmt_time(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f}us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f}ms"
    return f"{seconds:.2f}s"


def _num(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def _peer_cell(cell: dict | None) -> str:
    if cell is None:
        return ""
    status = cell.get("status")
    if status == "ok" and "ratio" in cell:
        return f"{cell['ratio']:.2f}x"
    return {"unsupported": "-", "n/a": "n/a", "error": "ERROR"}.get(status, "?")


def _render(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def device_table(result: dict, device: str) -> str:
    """The per-case table of one device, its notes, and the per-family summary."""
    part = result["devices"][device]
    peers = [n for n in part["libraries"] if n != "fastconv"]
    labels = [part["libraries"][n].get("label", n) for n in peers]
    head = ["case", "shape", "GFLOP", "FLOP/B", "floor", "fastconv (min-max)", "GFLOP/s", "GB/s", "%roof"]
    rows = [head + labels + ["best peer"]]
    for c in part["cases"]:
        ours = c["ours"]
        if ours["status"] == "ok":
            mid = [f"{fmt_time(ours['median_s'])} ({fmt_time(ours['min_s'])}-{fmt_time(ours['max_s'])})",
                   _num(ours["gflops"]), _num(ours["gbs"]), _num(ours["pct_roofline"])]
        else:
            mid = ["ERROR", "", "", ""]
        best = f"{c['best_peer']} {c['ratio_best']:.2f}x" if "best_peer" in c else "-"
        rows.append([c["name"], c["shape"], f"{c['flops'] / 1e9:.3f}", f"{c['intensity']:.1f}", fmt_time(c["floor_s"])]
                    + mid + [_peer_cell(c["peers"].get(n)) for n in peers] + [best])
    right = set(range(2, len(head))) | set(range(len(head), len(head) + len(peers)))
    ceiling = result["ceilings"][device]
    if device == "cpu":
        title = (f"CPU  {ceiling['fingerprint']['cpu']}  isa={ceiling['fingerprint']['isa']}  threads={part['threads']}  "
                 f"peak {ceiling['fma_gflops']:.1f} GFLOP/s ({ceiling['fma_gflops_1t']:.1f} on 1 thread)  "
                 f"triad {ceiling['triad_gbs']:.1f} GB/s ({ceiling['triad_gbs_1t']:.1f} on 1 thread)"
                 f"{'  [cached]' if ceiling.get('cached') else ''}")
    else:
        title = (f"GPU  {ceiling['fingerprint']['gpu']}  peak {ceiling['fma_gflops']:.0f} GFLOP/s  "
                 f"copy {ceiling['copy_gbs']:.0f} GB/s   cuDNN runs with TF32 off (allow_tf32=False)")
    out = [title, "ratio = peer time / fastconv time (> 1: fastconv is faster); floor = roofline time; "
           "%roof = floor / our time", "", _render(rows, right)]
    out += _notes(part, peers)
    out += ["", _summary_table(part, peers, labels)]
    return "\n".join(out)


def _notes(part: dict, peers: list[str]) -> list[str]:
    notes = []
    for name, lib in part["libraries"].items():
        if lib["status"] == "n/a":
            notes.append(f"  {name}: n/a ({lib['hint']})")
    for c in part["cases"]:
        if c["ours"]["status"] == "error":
            notes.append(f"  ERROR {c['name']} fastconv: {c['ours']['error']}")
        for name in peers:
            cell = c["peers"].get(name, {})
            if cell.get("status") == "error":
                notes.append(f"  ERROR {c['name']} {name}: {cell['error']}")
    return [""] + notes if notes else []


def _summary_table(part: dict, peers: list[str], labels: list[str]) -> str:
    rows = [["family (geomean)", "cases", "%roof"] + labels + ["best peer"]]
    for fam, s in part["summary"].items():
        rows.append([fam, str(s["cases"]), _num(s["pct_roofline"])]
                    + [_num(s.get(f"ratio_{n}"), ".2f") for n in peers] + [_num(s["ratio_best"], ".2f")])
    return _render(rows, set(range(1, len(rows[0]))))


def models_table(result: dict) -> str:
    """--models: per model and batch, our latency, each peer's, ratio (rounds' range) and spread."""
    part = result["models"]
    peers = [n for n in part["libraries"] if n != "fastconv"]
    head = ["model", "batch", "input", "GMACs", "fastconv", "spread", "img/s"]
    for n in peers:
        label = part["libraries"][n].get("label", n)
        head += [label, "spread", "ratio", "(rounds)"]
    rows = [head]
    for c in part["cases"]:
        ours = c["ours"]
        row = [c["model"], str(c["batch"]), c["shape"], f"{c['macs'] / 1e9:.2f}"]
        row += ([fmt_time(ours["median_s"]), f"{100 * ours['spread']:.0f}%", f"{ours['images_per_s']:.1f}"]
                if ours["status"] == "ok" else ["ERROR", "", ""])
        for n in peers:
            cell = c["peers"].get(n, {})
            if cell.get("status") == "ok":
                rr = cell.get("ratio_rounds") or [cell.get("ratio", 0)]
                row += [fmt_time(cell["median_s"]), f"{100 * cell['spread']:.0f}%", _peer_cell(cell),
                        f"{min(rr):.2f}-{max(rr):.2f}" if "ratio" in cell else ""]
            else:
                row += ["n/a" if part["libraries"][n]["status"] == "n/a" else _peer_cell(cell), "", "", ""]
        rows.append(row)
    title = (f"Models  {result['machine']['cpu']}  isa={result['machine']['isa']}  threads={part['threads']}  "
             f"PyTorch: same graph and weights (batch norm folded), channels_last, eval, no_grad")
    out = [title, "latency = median of one forward pass of the whole batch; ratio = peer time / fastconv time "
                  "(> 1: fastconv is faster); spread = (max - min) / median", "", _render(rows, set(range(1, len(head))))]
    checks = dict.fromkeys(f"  check {c['name'].split('/')[0]}: {c['ours']['check']}"  # once per model
                           for c in part["cases"] if "check" in c["ours"])
    out += _notes(part, peers)
    if checks:
        out += [""] + list(checks)
    return "\n".join(out)


def text_report(result: dict) -> str:
    parts = [device_table(result, d) for d in result["devices"]]
    if "models" in result:
        parts.append(models_table(result))
    parts += [f"note: {n}" for n in result.get("notes", [])]
    parts.append(f"suite {result['suite']}: {len(result['cases_run'])} cases, {result['elapsed_s']:.1f}s")
    return "\n\n".join(parts)


# --------------------------------------------------------------------------------------------
# JSON and plot


def write_json(result: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=1, default=str)
        f.write("\n")


def write_plot(result: dict, path: str) -> str | None:
    """Roofline PNG: each case at its arithmetic intensity, ours (filled) and the best peer (open).

    Returns None, or a message when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "--plot needs matplotlib: pip install 'fastconv[plot]' (or pip install matplotlib)"
    devices = list(result["devices"])
    fig, axes = plt.subplots(1, len(devices), figsize=(8 * len(devices), 6), squeeze=False)
    for ax, device in zip(axes[0], devices):
        part = result["devices"][device]
        peak, bw = part["peak_gflops"], part["bandwidth_gbs"]
        ai = [c["intensity"] for c in part["cases"]]
        lo, hi = min(ai + [peak / bw]) / 2, max(ai + [peak / bw]) * 2
        xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
        ax.plot(xs, [min(peak, x * bw) for x in xs], "k-", lw=1.5, label=f"roofline ({peak:.0f} GFLOP/s, {bw:.0f} GB/s)")
        colors = plt.get_cmap("tab10")
        fams = list(dict.fromkeys(c["family"] for c in part["cases"]))
        for c in part["cases"]:
            color = colors(fams.index(c["family"]) % 10)
            if c["ours"]["status"] == "ok":
                ax.plot(c["intensity"], c["ours"]["gflops"], "o", color=color)
                ax.annotate(c["name"], (c["intensity"], c["ours"]["gflops"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
            if "best_peer" in c:
                peer = c["peers"][c["best_peer"]]
                ax.plot(c["intensity"], c["flops"] / peer["median_s"] / 1e9, "o", mfc="none", color=color)
        for fam in fams:
            ax.plot([], [], "o", color=colors(fams.index(fam) % 10), label=fam)
        ax.plot([], [], "o", mfc="none", color="gray", label="best peer")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOP / byte, each input read once, output written once)")
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"fastconv {device} ({result['suite']})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return None
