"""docs/tutorial.ipynb runs from top to bottom, and what it prints states the essay's argument.

The notebook is executed afresh (a copy, with the interpreter running these tests as its kernel),
once for the module; each test then reads one tagged cell's printed output. The stored notebook
must hold its outputs and figures, so that it reads on GitHub without running.

To refresh the stored outputs after changing the notebook or the library::

    .venv/bin/python tests/test_tutorial.py
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"
KERNEL = "lvm-suite-tutorial"
NUMBER = r"([+-]?\d+\.\d+)"


def register_kernel(jupyter_dir: Path) -> None:
    """A kernel spec under ``jupyter_dir`` that runs this interpreter (whose site-packages hold
    the library), so that neither a user's nor the system's ``python3`` kernel is picked up."""
    spec_dir = jupyter_dir / "kernels" / KERNEL
    spec_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "lvm-suite", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))


def execute(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Run every cell in the repository root with the :data:`KERNEL` kernel, in place; no cell
    is timed out. Raises ``nbclient.exceptions.CellExecutionError`` at the first failing cell."""
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=KERNEL,
        timeout=None,
        resources={"metadata": {"path": str(ROOT)}},
    )
    return client.execute()


def printed(notebook: nbformat.NotebookNode, tag: str) -> str:
    """The text the code cell tagged ``tag`` wrote to stdout."""
    (cell,) = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def figures(notebook: nbformat.NotebookNode) -> list[str]:
    """The PNG figures among the notebook's outputs (base64)."""
    return [
        output.data["image/png"]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]


def diagnosis(text: str) -> tuple[float, int, bool, float, float, float]:
    """(rate, active units, latent ignored, ELBO, exact log p(x), ML diagonal Gaussian) as the
    diagnosis cells print them."""
    used = re.search(rf"rate {NUMBER} nats, (\d+) active units, latent ignored: (True|False)", text)
    bounds = re.search(
        rf"ELBO {NUMBER}, exact log p\(x\) {NUMBER}, ML diagonal Gaussian {NUMBER}", text
    )
    assert used and bounds, text
    rate, active, ignored = float(used[1]), int(used[2]), used[3] == "True"
    return (rate, active, ignored, *map(float, bounds.groups()))


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> nbformat.NotebookNode:
    jupyter_dir = tmp_path_factory.mktemp("jupyter")
    register_kernel(jupyter_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(jupyter_dir))
        return execute(nbformat.read(NOTEBOOK, as_version=4))


def test_every_code_cell_runs_without_error(executed):
    code_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert code_cells and all(cell.execution_count for cell in code_cells)
    errors = [o for cell in code_cells for o in cell.outputs if o.output_type == "error"]
    assert not errors


def test_powerful_decoder_ignores_its_latent_and_its_bound_is_nearly_tight(executed):
    rate, active, ignored, bound, exact, collapsed_optimum = diagnosis(
        printed(executed, "collapse")
    )
    assert rate < 0.05 and active == 0 and ignored
    assert exact - bound < 0.05
    assert abs(bound - collapsed_optimum) < 0.1


def test_weak_decoder_uses_its_latent_to_beat_any_collapsed_solution(executed):
    rate, active, ignored, bound, exact, collapsed_optimum = diagnosis(printed(executed, "used"))
    assert rate > 1.0 and active >= 1 and not ignored
    assert bound > collapsed_optimum + 1.0


def test_printed_bounds_are_ordered_and_iw_rises_with_k(executed):
    rows = re.findall(
        rf"(\w+)\s+ELBO {NUMBER} <= IW_1000 {NUMBER} <= log p\(x\) {NUMBER}.*: (.*)\)",
        printed(executed, "bounds"),
    )
    assert [row[0] for row in rows] == ["powerful", "weak"]
    rounding = 1e-3  # the figures are printed to three decimals
    for _, bound, iw_1000, exact, iw_by_k in rows:
        assert float(bound) <= float(iw_1000) + rounding <= float(exact) + 2 * rounding
        iw = [float(value) for value in iw_by_k.split(", ")]
        assert all(low <= high + rounding for low, high in zip(iw, iw[1:]))


def test_free_bits_buy_rate_on_the_collapsed_pair(executed):
    priced = re.search(
        rf"free bits 1 nat: rate {NUMBER} nats \({NUMBER}\), log p\(x\) change {NUMBER} ± {NUMBER}",
        printed(executed, "remedy"),
    )
    assert priced, printed(executed, "remedy")
    assert float(priced[1]) > 0.5 and float(priced[2]) > 0.5


def test_own_pair_passes_every_bound_check(executed):
    text = printed(executed, "own-pair")
    assert text.startswith("passed: ELBO <= IW_1; ")
    assert "IW_100 <= log p(x)" in text


def test_notebook_draws_two_figures(executed):
    assert len(figures(executed)) == 2


def test_stored_notebook_holds_its_outputs_and_figures():
    stored = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in stored.cells if cell.cell_type == "code"]
    assert all(cell.execution_count and cell.outputs for cell in code_cells)
    assert len(figures(stored)) == 2


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        register_kernel(Path(directory))
        os.environ["JUPYTER_PATH"] = directory
        notebook = execute(nbformat.read(NOTEBOOK, as_version=4))
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, NOTEBOOK)
