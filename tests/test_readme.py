"""The README: its Python snippets run, and every figure it quotes from a command's JSON output
is that output's figure, as shown.

How the figures are checked. Each table the README copies from a command's output is a
:class:`Table` in ``TABLES``: where it starts (the beginning of its header line, and ``title``,
the line right above the header, where two tables share one), the JSON file the command wrote,
how to read the rows from it, and for every column header the field it shows. The README's rows
and the JSON's must be as many and in the same order, and each cell must show its field: a
number rounded to the decimals the cell has (a star after it marks a footnote), yes/no for a
boolean, "-" for None, anything else verbatim. The header is read from the README, so a column
the mapping does not know fails the test with its name; a qualifier column ("change",
"± stderr", "(se)") is named after the column before it ("ELBO change"). Lines that are no
table (a title, a footer, a printed sentence) are rendered from the JSON by the functions in
``LINES`` and must appear in the README (spaces aside).

To check a new column: add ``"its header": "json.field"`` (a dotted path into the row, or a
function of the row) to its table's ``columns``. To check a new table: add a ``Table`` to
``TABLES``. A figure that exists only in the README's prose is not checked here.
"""

from __future__ import annotations

import json
import re
import runpy
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
QUALIFIERS = ("change", "± stderr", "(se)")  # headers that qualify the column before them
CELL = re.compile(r"\S+(?: \S+)*")  # a cell: words one space apart; cells are two apart
NUMBER = re.compile(r"([+-]?\d+(?:\.(\d+))?)\*?")  # a star marks a footnote
NAMED_K = re.compile(r"^IW_\d+$")  # IW_1000 in a header: IW_K

Field = str | Callable[[dict], object]  # a dotted path into a JSON row, or a function of it


@dataclass(frozen=True)
class Table:
    """A README table and the JSON it shows (see the module's docstring)."""

    name: str
    source: str  # the JSON file, relative to the repository root
    header: str  # how the header line starts (spaces between words do not matter)
    rows: Callable[[dict], list[dict]]
    columns: dict[str, Field]
    title: str | None = None  # the line right above the header, where two tables share one


@dataclass(frozen=True)
class Lines:
    """Lines the README must hold, each rendered from a JSON file."""

    name: str
    source: str
    render: Callable[[dict], list[str]]


def frontier_table(sweep: str) -> Table:
    return Table(
        name=f"frontier: {sweep}",
        source="docs/frontier/frontier.json",
        header="beta rate distortion",
        title=sweep,
        rows=lambda report: [
            *report["sweeps"][sweep]["rows"],
            *report["sweeps"][sweep].get("remedies", []),
        ],
        columns={
            "beta": lambda row: row.get("remedy") or row["beta"],
            "rate": "rate",
            "distortion": "distortion",
            "ELBO": "elbo",
            "IW_K": "iw",
            "stderr": "iw_stderr",
            "exact": "exact",
            "active": "active_units",
        },
    )


def _ais_estimates(report: dict) -> list[dict]:
    """The rows of the README's AIS-against-IW table, labelled as the benchmark prints them."""
    ais, iw = report["ais"]["ais_vs_iw"]["ais"], report["ais"]["ais_vs_iw"]
    return [
        {"label": f"AIS {ais['num_steps']} steps", **ais},
        *(
            {
                "label": f"IW K={row['num_samples']}",
                **row,
                "evaluations_per_point": row["num_samples"],
            }
            for row in (iw["iw"], iw["iw_same_budget"])
        ),
    ]


TABLES = [
    Table(
        name="collapse summary",
        source="docs/collapse/results.json",
        header="exp data decoder",
        rows=lambda report: report["experiments"],
        columns={
            "exp": "key",
            "data": "data",
            "decoder": "decoder",
            "powerful": "powerful",
            "ELBO": "elbo",
            "IW_K": "iw.mean",
            "K": "iw.num_samples",
            "exact": "exact",
            "rate": "rate",
            "active": "active_units",
            "latent ignored": "latent_ignored",
        },
    ),
    Table(
        name="price of the remedies",
        source="docs/collapse/results.json",
        header="case remedy rate",
        rows=lambda report: report["remedies"],
        columns={
            "case": "case",
            "remedy": "remedy",
            "rate": "rate",
            "gained": "rate_gained",
            "active": "active_units",
            "ELBO": "elbo",
            "ELBO change": "elbo_change",
            "log p(x)": "log_px",
            "log p(x) change": "log_px_change",
            "log p(x) change ± stderr": "log_px_change_stderr",
            "IW_K": "iw",
            "IW gap": "iw_gap",
        },
    ),
    Table(
        name="where the ELBO's gap goes",
        source="docs/collapse/results.json",
        header="exp reference inference gap",
        rows=lambda report: report["experiments"],
        columns={
            "exp": "key",
            "reference": "gaps.reference",
            "inference gap": "gaps.inference_gap.mean",
            "approximation": "gaps.approximation_gap.mean",
            "amortisation": "gaps.amortization_gap.mean",
            "amortisation (se)": lambda row: max(
                row["gaps"]["approximation_gap"]["stderr"],
                row["gaps"]["amortization_gap"]["stderr"],
            ),
        },
    ),
    frontier_table("pPCA, noise fixed (linear oracle)"),
    frontier_table("full-covariance Gaussian VAE"),
    Table(
        name="sandwich",
        source="docs/sandwich/sandwich.json",
        header="steps lower (se) upper",
        rows=lambda report: report["rows"],
        columns={
            "steps": "num_steps",
            "lower": "lower",
            "lower (se)": "lower_stderr",
            "upper": "upper",
            "upper (se)": "upper_stderr",
            "width": "width",
            "seconds": "seconds",
        },
    ),
    Table(
        name="benchmark: all K particles at once",
        source="benchmarks/results.json",
        header="path seconds",
        rows=lambda report: report["iw_pyro_paths"],
        columns={
            "path": "which",
            "seconds": "seconds",
            "peak RSS MiB": "peak_rss_mib",
            "growth MiB": "rss_growth_mib",
        },
    ),
    Table(
        name="benchmark: peak memory of iw_log_marginal",
        source="benchmarks/results.json",
        header="K seconds peak RSS MiB",
        rows=lambda report: report["iw_memory"],
        columns={
            "K": "num_samples",
            "seconds": "seconds",
            "peak RSS MiB": "peak_rss_mib",
            "growth MiB": "rss_growth_mib",
        },
    ),
    Table(
        name="benchmark: BDMC",
        source="benchmarks/results.json",
        header="BDMC steps lower",
        rows=lambda report: report["ais"]["sandwich"],
        columns={
            "BDMC steps": "num_steps",
            "lower": "lower.mean",
            "upper": "upper.mean",
            "width": "width_mean",
            "evals/pt": lambda row: sum(
                row[s]["evaluations_per_point"] for s in ("lower", "upper")
            ),
            "s": "seconds",
        },
    ),
    Table(
        name="benchmark: AIS against IW",
        source="benchmarks/results.json",
        header="estimate log p(x) stderr",
        rows=_ais_estimates,
        columns={
            "estimate": "label",
            "log p(x)": "mean",
            "stderr": "stderr",
            "evals/pt": "evaluations_per_point",
            "s": "seconds",
        },
    ),
]

LINES = [
    Lines(
        "collapse findings",
        "docs/collapse/results.json",
        lambda report: [f"{row['key']} {row['finding']}" for row in report["experiments"]],
    ),
    Lines(
        "frontier footers",
        "docs/frontier/frontier.json",
        lambda report: [
            f"(nats per data point, N={sweep['num_data']}, K={sweep['num_samples']})"
            for sweep in report["sweeps"].values()
        ],
    ),
    Lines(
        "sandwich footer",
        "docs/sandwich/sandwich.json",
        lambda report: [
            f"(nats per point, N={report['num_data']} points simulated from the model, "
            f"{report['num_chains']} chains each way)"
        ],
    ),
    Lines(
        "benchmark: device, IW against the baselines, chunk sweep, profile, SVI steps",
        "benchmarks/results.json",
        lambda report: [
            f"{report['date']}, {report['device']}",
            f"float32 matmul: {report['matmul_gflops']:.0f} GFLOP/s",
            *_benchmark_tables(report),
        ],
    ),
]


def _benchmark_tables(report: dict) -> list[str]:
    """The lines ``python -m benchmarks.run`` prints for these figures: the README pastes them."""
    from benchmarks import run

    sections = (
        run.iw_table(report["iw_time"]),
        run.chunk_table(report["iw_chunks"]),
        run.profile_table(report["iw_profile"]),
        run.svi_table(report["svi_step"]),
    )
    return [line for section in sections for line in section]


# --- the snippets ------------------------------------------------------------------------------


def test_readme_has_snippets():
    assert len(SNIPPETS) >= 3


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_snippet_runs(snippet, tmp_path, monkeypatch):
    # Run from a file, as a user would: hypothesis needs the source of the functions it wraps;
    # in a folder of its own, so the files a snippet writes stay out of the checkout.
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "snippet.py"
    script.write_text(snippet)
    runpy.run_path(str(script), run_name="readme")


def test_the_bad_input_table_in_docs_is_what_the_rows_give():
    # Run in a fresh process, as the table was written: the rows' figures and names match.
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bad_input_table.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


# --- the figures -------------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES, ids=[table.name for table in TABLES])
def test_readme_table_shows_the_figures_of_its_json(table):
    json_rows = table.rows(_json(table.source))
    header, lines = _table_lines(table, len(json_rows))
    columns = _columns(table, header)
    for number, (line, json_row) in enumerate(zip(lines, json_rows), start=1):
        cells = _cells(line, columns, f"{table.name}, row {number}")
        for (name, _, _), cell in zip(columns, cells):
            value = _field(json_row, table.columns[name])
            assert _shows(cell, value), (
                f"README table '{table.name}', row {number}, column '{name}' shows {cell!r}; "
                f"{table.source} has {value!r}"
            )


@pytest.mark.parametrize("lines", LINES, ids=[lines.name for lines in LINES])
def test_readme_lines_are_rendered_from_their_json(lines):
    readme = {_squeezed(line) for line in README.read_text().splitlines()}
    for line in lines.render(_json(lines.source)):
        assert _squeezed(line) in readme, f"README lacks, from {lines.source}: {line!r}"


@pytest.mark.parametrize(
    ("cell", "value", "shown"),
    [
        ("-12.311", -12.31144, True),
        ("-12.311", -12.3104, False),
        ("+9.084", 9.08369, True),
        ("0.001", 0.000509, True),
        ("116", 116.39, True),
        ("2", 2, True),
        ("2", 3, False),
        ("yes", True, True),
        ("no", True, False),
        ("-", None, True),
        ("-18.997*", -18.9972, True),
        ("beta = 0.2", "beta = 0.2", True),
    ],
)
def test_a_cell_shows_a_figure_rounded_to_its_own_decimals(cell, value, shown):
    assert _shows(cell, value) is shown


# --- reading the README ------------------------------------------------------------------------


@cache
def _json(source: str) -> dict:
    return json.loads((ROOT / source).read_text())


def _squeezed(line: str) -> str:
    return " ".join(line.split())


def _table_lines(table: Table, num_rows: int) -> tuple[str, list[str]]:
    """The header line of ``table`` in the README and the ``num_rows`` rows below it (rules of
    dashes skipped), which must be all the table has."""
    lines = README.read_text().splitlines()
    starts = [
        i
        for i, line in enumerate(lines)
        if _squeezed(line).startswith(_squeezed(table.header))
        and (table.title is None or (i > 0 and lines[i - 1].strip() == table.title))
    ]
    assert len(starts) == 1, f"README: {len(starts)} headers of table '{table.name}', not 1"
    below = [line for line in lines[starts[0] + 1 :] if not _is_rule(line)] + [""]
    count = next(i for i, line in enumerate(below) if _ends_table(line))
    assert count == num_rows, (
        f"README table '{table.name}' has {count} rows; {table.source} has {num_rows}"
    )
    return lines[starts[0]], below[:num_rows]


def _is_rule(line: str) -> bool:
    return bool(line.strip()) and set(line.strip()) == {"-"}


def _ends_table(line: str) -> bool:
    """A blank line, a footnote, the end of the code block or the next table's header."""
    text = _squeezed(line)
    headers = (_squeezed(table.header) for table in TABLES)
    return not text or text.startswith(("(", "```")) or any(map(text.startswith, headers))


def _columns(table: Table, header: str) -> list[tuple[str, int, int]]:
    """(name, start, end) of each column of a header line, names as ``table.columns`` has them.

    Cells two or more spaces apart are columns; a cell the mapping does not know is split at its
    single spaces into known names ("case remedy"). A qualifier takes the previous name; a
    header IW_1000 is read as IW_K.
    """
    known = set(table.columns) | set(QUALIFIERS)
    columns: list[tuple[str, int, int]] = []
    for cell in CELL.finditer(header):
        words = [
            (
                NAMED_K.sub("IW_K", word.group()),
                cell.start() + word.start(),
                cell.start() + word.end(),
            )
            for word in re.finditer(r"\S+", cell.group())
        ]
        while words:
            size = next((n for n in range(len(words), 0, -1) if _joined(words[:n]) in known), None)
            assert size is not None, (
                f"README table '{table.name}' has a column '{_joined(words)}' that tests/"
                "test_readme.py does not map to a JSON field: add it to the table's columns"
            )
            text = _joined(words[:size])
            name = f"{columns[-1][0]} {text}" if text in QUALIFIERS and columns else text
            assert name in table.columns, (
                f"README table '{table.name}': column '{name}' has no JSON field in tests/"
                "test_readme.py: add it to the table's columns"
            )
            columns.append((name, words[0][1], words[size - 1][2]))
            words = words[size:]
    return columns


def _joined(words: list[tuple[str, int, int]]) -> str:
    return " ".join(word for word, _, _ in words)


def _cells(line: str, columns: list[tuple[str, int, int]], where: str) -> list[str]:
    """The cell of each column in a row: each cell goes to the column it overlaps most (or
    lies nearest to), so numbers right-aligned under a header and text left-aligned both land."""
    cells: list[list[str]] = [[] for _ in columns]
    for match in CELL.finditer(line):
        start, end = match.span()
        overlap = [min(end, right) - max(start, left) for _, left, right in columns]
        cells[max(range(len(columns)), key=overlap.__getitem__)].append(match.group())
    assert all(len(column) == 1 for column in cells), (
        f"README table {where}: cannot split {line!r} into the columns "
        f"{[name for name, _, _ in columns]}"
    )
    return [column[0] for column in cells]


def _field(row: dict, source: Field) -> object:
    if callable(source):
        return source(row)
    value: object = row
    for key in source.split("."):
        value = value[key]
    return value


def _shows(cell: str, value: object) -> bool:
    """Whether a README cell shows ``value``: rounded to the cell's decimals if a number."""
    if value is None:
        return cell == "-"
    if isinstance(value, bool):
        return cell == ("yes" if value else "no")
    if isinstance(value, (int, float)):
        # A trailing " !" is the tables' flag of an untrustworthy k-hat, not part of the number.
        number = NUMBER.fullmatch(cell.removesuffix(" !"))
        if number is None:
            return False
        if isinstance(value, int):
            return int(number.group(1)) == value
        half_unit = 0.5 * 10.0 ** -len(number.group(2) or "")
        return abs(float(number.group(1)) - value) <= half_unit * (1 + 1e-9)
    return cell == str(value)
