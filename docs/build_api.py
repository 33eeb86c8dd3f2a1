"""Build the API reference from the docstrings: ``python docs/build_api.py [OUTPUT_DIR]``.

pdoc renders ``lvm_models``, ``guides``, ``inference`` and ``inference.strategies`` as HTML
into ``docs/api/``: each package shows the names in its ``__all__`` (the public surface), with
signatures, type hints and docstrings. Any warning pdoc gives (a module it cannot import, an
annotation or docstring it cannot read) fails the build, so ``make docs`` in CI keeps the
reference whole.
"""

from __future__ import annotations

import re
import shutil
import sys
import warnings
from pathlib import Path

import pdoc
import pdoc.docstrings
import pdoc.render

# The packages show what their __all__ names; the hypothesis strategies are a public module
# of their own.
MODULES = ("lvm_models", "guides", "inference", "inference.strategies")
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "api"

# The docstrings cross-reference as Sphinx does: ``:func:`~inference.elbo``` shows the last
# part of the name. pdoc keeps the tilde, which stops it from linking the name; without the
# tilde it shows the full name and links it.
_SHORTENED_REFERENCE = re.compile(r"((?::py)?:(?:mod|func|data|const|class|meth|attr|exc|obj):`)~")
_rst = pdoc.docstrings.rst


def _rst_with_full_names(contents: str, source_file: Path | None) -> str:
    return _rst(_SHORTENED_REFERENCE.sub(r"\1", contents), source_file)


def _resolve_lazy_names() -> None:
    """Load the names ``inference`` imports on first use (the NumPyro and ArviZ backends) into
    its namespace: pdoc reads a module's ``__dict__``, not its ``__getattr__``."""
    import inference

    for name in inference.__all__:
        vars(inference).setdefault(name, getattr(inference, name))


def build(output: Path) -> list[warnings.WarningMessage]:
    """Write the reference into ``output`` (its old pages removed first); return pdoc's
    warnings."""
    if output.exists():
        for entry in output.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.name != ".gitignore":
                entry.unlink()
    pdoc.docstrings.rst = _rst_with_full_names
    _resolve_lazy_names()
    pdoc.render.configure(docformat="restructuredtext")
    pdoc_folder = Path(pdoc.__file__).parent
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*MODULES, output_directory=output)
    return [w for w in caught if Path(w.filename).is_relative_to(pdoc_folder)]


def main(argv: list[str]) -> int:
    output = Path(argv[0]) if argv else DEFAULT_OUTPUT
    problems = build(output)
    for problem in problems:
        print(f"pdoc: {problem.category.__name__}: {problem.message}", file=sys.stderr)
    if problems:
        print(f"the API reference has {len(problems)} warning(s)", file=sys.stderr)
        return 1
    print(f"API reference written to {output / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
