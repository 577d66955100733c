"""What the experiment tools share (the ablations, the paper reproduction, the probes).

Running ``tools/train_net.py`` as a subprocess, reading the final evaluation table from its
``log.txt``, fingerprinting a resolved config, mean ± std over seeds, the paired difference of
two rows over the seeds both have (with a Student-t interval), and replacing one marked section of
a markdown file without touching the rest of it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import subprocess
import sys
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple



def _find_repo() -> str:
    """The repository root (the folder holding ``tools/train_net.py``): found above this file in
    a source checkout, else the working directory (experiments are run from the root)."""
    folder = os.path.dirname(os.path.abspath(__file__))
    while True:
        if os.path.isfile(os.path.join(folder, "tools", "train_net.py")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return os.getcwd()
        folder = parent


REPO = _find_repo()
TRAIN_NET = os.path.join("tools", "train_net.py")
METRICS = ("mAP", "Rank-1", "Rank-5", "Rank-10")

# fastreid's print_csv_format: a pipe table whose first column is "Dataset".
_TABLE_HEADER = re.compile(r"^\|\s*Dataset\s*\|(.*)\|\s*$")
_TABLE_ROW = re.compile(r"^\|(.*)\|\s*$")


def parse_eval_tables(log_text: str) -> Dict[str, Dict[str, float]]:
    """The last evaluation result of every test set printed in a fastreid ``log.txt``.

    fastreid prints each evaluation as a pipe table (``| Dataset | Rank-1 | ... |``) with one
    row per test set; a later table (a resumed run, a later evaluation) replaces an earlier one.

    Returns:
        ``{dataset: {metric: value}}``, values in percent as printed.
    """
    results: Dict[str, Dict[str, float]] = {}
    lines = log_text.splitlines()
    for index, line in enumerate(lines):
        header = _TABLE_HEADER.match(line.split("]: ", 1)[-1].strip())
        if not header:
            continue
        names = [name.strip() for name in header.group(1).split("|")]
        for row_line in lines[index + 2:]:
            row = _TABLE_ROW.match(row_line.strip())
            if not row:
                break
            cells = [cell.strip() for cell in row.group(1).split("|")]
            if len(cells) != len(names) + 1:
                break
            values = {}
            for name, cell in zip(names, cells[1:]):
                try:
                    values[name] = float(cell)
                except ValueError:
                    continue
            results[cells[0]] = values
    return results


def config_fingerprint(cfg, ignore: Sequence[str] = ("OUTPUT_DIR", "SEED")) -> str:
    """A hash of a resolved config, leaving out the keys that differ between repeats of a run."""
    clone = cfg.clone()
    clone.defrost()
    for key in ignore:
        if key in clone:
            del clone[key]
    return hashlib.sha256(clone.dump(sort_keys=True).encode()).hexdigest()[:16]


def mean_std(values: Iterable[float]):
    """Mean and sample standard deviation (ddof 1; 0.0 for a single value)."""
    values = list(values)
    if not values:
        raise ValueError("mean_std of no values")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance)


def format_mean_std(values: Sequence[float], digits: int = 1) -> str:
    """``"12.3 ± 0.4"`` over seeds, just ``"12.3"`` for one seed."""
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


class PairedDifference(NamedTuple):
    """``other - reference`` at every seed both rows have, and a confidence interval of its mean.

    ``mean`` is None without a common seed; ``sd``, ``t``, ``low`` and ``high`` are None with
    fewer than two (one difference has no spread to build an interval from).
    """

    seeds: Tuple[int, ...]
    differences: Tuple[float, ...]
    mean: Optional[float]
    sd: Optional[float]  # sample standard deviation of the differences (ddof 1)
    t: Optional[float]  # the Student-t quantile used, t_{(1+confidence)/2, n-1}
    low: Optional[float]
    high: Optional[float]
    confidence: float

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def excludes_zero(self) -> Optional[bool]:
        """Whether the interval lies wholly above or below 0 (None: no interval)."""
        if self.low is None:
            return None
        return self.low > 0 or self.high < 0


def paired_difference(reference: Mapping[int, float], other: Mapping[int, float],
                      confidence: float = 0.95) -> PairedDifference:
    """The per-seed difference ``other[s] - reference[s]``, paired by seed, with a two-sided
    Student-t interval of its mean: ``mean ± t_{(1+confidence)/2, n-1} · sd / √n``.

    Only seeds present in both mappings are paired; a seed one row lacks is left out.

    Args:
        reference: ``{seed: value}`` of the reference (baseline) row.
        other: ``{seed: value}`` of the row compared with it.
        confidence: of the two-sided interval, in (0, 1).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    seeds = tuple(sorted(set(reference) & set(other)))
    differences = tuple(float(other[s]) - float(reference[s]) for s in seeds)
    if not differences:
        return PairedDifference(seeds, differences, None, None, None, None, None, confidence)
    if len(differences) == 1:
        return PairedDifference(seeds, differences, differences[0], None, None, None, None, confidence)
    from scipy import stats

    mean, sd = mean_std(differences)
    t = float(stats.t.ppf(0.5 + confidence / 2, len(differences) - 1))
    half = t * sd / math.sqrt(len(differences))
    return PairedDifference(seeds, differences, mean, sd, t, mean - half, mean + half, confidence)


def format_paired(paired: PairedDifference, digits: int = 2, mark: str = "*") -> str:
    """``"-0.83 [-1.55, -0.12] * (n=3)"``: mean difference, its interval, ``mark`` when the
    interval excludes 0, and the number of paired seeds. One paired seed: its difference and
    no interval; none: a dash."""
    if paired.mean is None:
        return "– (no common seed)"
    if paired.low is None:
        return f"{paired.mean:+.{digits}f} (1 seed: an interval needs ≥ 2)"
    flag = f" {mark}" if paired.excludes_zero else ""
    return f"{paired.mean:+.{digits}f} [{paired.low:.{digits}f}, {paired.high:.{digits}f}]{flag} (n={paired.n})"


def replace_marked_section(text: str, name: str, body: str) -> str:
    """Put ``body`` between ``<!-- name -->`` and ``<!-- /name -->`` in ``text``.

    Only the text between the two markers changes; without the markers, the marked section is
    appended at the end. A start marker without its end marker is an error (the rest of the
    file would be lost otherwise).
    """
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    begin = text.find(start)
    if begin < 0:
        separator = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        return f"{text}{separator}{block}\n"
    finish = text.find(end, begin)
    if finish < 0:
        raise ValueError(f"Marker {start} has no matching {end}: fix the file by hand.")
    return text[:begin] + block + text[finish + len(end):]


def update_markdown(path: str, sections: Dict[str, str]) -> None:
    """Replace (or append) each marked section of the markdown file ``path``, atomically."""
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    for name, body in sections.items():
        text = replace_marked_section(text, name, body)
    write_atomic(path, text)


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    from ..serialization import write_text_atomically

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text_atomically(text, path)  # flushed, fsynced, renamed; a failure leaves the old file


def write_json(path: str, data) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def machine() -> Dict[str, object]:
    """What the numbers were measured on."""
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }


def train_command(config_file: str, output_dir: str, opts: Sequence[str], *, resume: bool = False,
                  num_gpus: int = 1, python: Optional[str] = None) -> List[str]:
    """The ``tools/train_net.py`` command line of one run (``OUTPUT_DIR`` last, so it wins)."""
    cmd = [python or sys.executable, TRAIN_NET, "--config-file", config_file]
    if num_gpus > 1:
        cmd += ["--num-gpus", str(num_gpus)]
    if resume:
        cmd.append("--resume")
    return cmd + list(opts) + ["OUTPUT_DIR", output_dir]


def has_checkpoint(output_dir: str) -> bool:
    """Whether an interrupted run left a checkpoint to resume from."""
    return os.path.isfile(os.path.join(output_dir, "last_checkpoint"))


def run_logged(cmd: Sequence[str], log_path: str, cwd: str = REPO, env=None) -> int:
    """Run ``cmd``, appending its stdout and stderr to ``log_path``; return its exit status."""
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        return subprocess.run(list(cmd), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode


def tail(path: str, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    if not os.path.isfile(path):
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def publish(result: dict, table: str, output_dir: str, stem: str, figure: Optional[str], draw,
            results_md: Optional[str] = None, section: str = "", description: str = "", alt: str = "") -> str:
    """Print ``table`` and write a measurement's files: ``draw(result, figure)`` (default
    ``output_dir/<stem>.png``), ``<stem>.json``, ``<stem>.md`` and, with ``results_md``, its marked
    ``section`` (``description``, the table and the figure). Returns the figure's path."""
    print(table)
    out = repo_path(output_dir)
    figure = repo_path(figure) if figure else os.path.join(out, f"{stem}.png")
    draw(result, figure)
    write_json(os.path.join(out, f"{stem}.json"), result)
    write_atomic(os.path.join(out, f"{stem}.md"), table + "\n")
    if results_md:
        md = repo_path(results_md)
        rel = os.path.relpath(figure, os.path.dirname(os.path.abspath(md)))
        update_markdown(md, {section: f"{description}\n\n{table}\n\n![{alt}]({rel})"})
    print(f"wrote {out}/{stem}.json, {stem}.md and {figure}")
    return figure


def repo_path(path: str) -> str:
    """``path`` as train_net.py sees it: relative paths are relative to the repository root."""
    return path if os.path.isabs(path) else os.path.join(REPO, path)
