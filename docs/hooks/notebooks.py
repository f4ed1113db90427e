"""MkDocs hook: the teaching notebooks (``docs/notebooks/*.py``, jupytext percent
scripts) as pages, executed, with their printed output, tables and figures.

Each notebook is run top to bottom in a Jupyter kernel (nbclient) in an empty
folder, as many at once as there are cores, and its cells become Markdown: text cells as they are, code cells as
Python blocks, outputs below them (text as a block, tables as HTML, figures as
PNG files beside the page). An executed notebook is kept in
``build/docs-notebooks/`` under a key made of its source and the package's
sources, so a rebuild with nothing changed runs nothing. A cell that fails
fails the build.

``INNSIGHT_DOCS_EXECUTE=0`` renders the source without outputs (the page
structure test uses it; ``make docs`` always executes).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "docs" / "notebooks"
CACHE = ROOT / "build" / "docs-notebooks"
#: Seconds one cell may run before the build fails.
CELL_TIMEOUT = 600
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def source_key(notebook: Path) -> str:
    """A hash of the notebook and of every source file of the package it runs."""
    digest = hashlib.sha256(notebook.read_bytes())
    for path in sorted((ROOT / "src" / "innsight").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def executed(notebooks: list[Path]) -> dict[Path, object]:
    """Each notebook as a ``nbformat`` node, executed: from the cache where it is up to
    date, else run, as many at once as there are cores (each in its own kernel)."""
    import nbformat

    results, stale = {}, []
    for notebook in notebooks:
        cached = CACHE / f"{notebook.stem}.ipynb"
        nb = nbformat.read(cached, as_version=4) if cached.exists() else None
        if nb is not None and nb.metadata.get("innsight_docs_key") == source_key(notebook):
            results[notebook] = nb
        else:
            stale.append(notebook)
    if stale:
        CACHE.mkdir(parents=True, exist_ok=True)
        asyncio.run(_run_all(stale, results))
    return results


async def _run_all(notebooks: list[Path], results: dict) -> None:
    cores = asyncio.Semaphore(os.cpu_count() or 1)
    await asyncio.gather(*(_run(notebook, results, cores) for notebook in notebooks))


async def _run(notebook: Path, results: dict, cores: asyncio.Semaphore) -> None:
    """Run one notebook in an empty folder; the kernel's own log goes to a file beside
    the cached notebook (a cell that fails raises, naming the cell)."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    nb = jupytext.read(notebook)
    async with cores:
        with tempfile.TemporaryDirectory() as folder, \
                open(CACHE / f"{notebook.stem}.kernel.log", "w") as log:
            client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                    resources={"metadata": {"path": folder}})
            await client.async_execute(stderr=log)
    nb.metadata["innsight_docs_key"] = source_key(notebook)
    nbformat.write(nb, CACHE / f"{notebook.stem}.ipynb")
    results[notebook] = nb


#: Outputs a static page cannot show (live widgets such as progress bars).
_WIDGET = "application/vnd.jupyter.widget-view+json"


def _text_block(text: str) -> str:
    """Text as a terminal shows it: colours dropped, each line as its last ``\\r`` left it."""
    lines = [line.rsplit("\r", 1)[-1] for line in _ANSI.sub("", text).rstrip("\n").split("\n")]
    return "```text\n" + "\n".join(lines) + "\n```"


def render(nb, stem: str) -> tuple[str, dict[str, bytes]]:
    """Markdown of a notebook and its figures ``{name: png bytes}``, names relative to
    the page's folder."""
    parts: list[str] = []
    figures: dict[str, bytes] = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source)
            continue
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        parts.append("```python\n" + cell.source.rstrip("\n") + "\n```")
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(_text_block(output.text))
            elif output.output_type == "error":
                parts.append(_text_block("\n".join(output.traceback)))
            elif "data" in output and _WIDGET not in output.data:
                data = output.data
                if "image/png" in data:
                    name = f"{stem}/figure_{len(figures) + 1}.png"
                    figures[name] = base64.b64decode(data["image/png"])
                    parts.append(f"![figure {len(figures)} of {stem}]({name})")
                elif "text/html" in data and "<script" not in data["text/html"]:
                    parts.append('<div class="notebook-output" markdown="0">\n'
                                 + data["text/html"].strip() + "\n</div>")
                elif "text/plain" in data:
                    parts.append(_text_block(data["text/plain"]))
    return "\n\n".join(parts) + "\n", figures


def on_files(files, config, **kwargs):
    """Add one page per notebook (and its figures) to the site."""
    import jupytext
    from mkdocs.structure.files import File

    notebooks = sorted(NOTEBOOKS.glob("*.py"))
    if os.environ.get("INNSIGHT_DOCS_EXECUTE", "1") == "0":
        nbs = {notebook: jupytext.read(notebook) for notebook in notebooks}
    else:
        nbs = executed(notebooks)
    for notebook in notebooks:
        markdown, figures = render(nbs[notebook], notebook.stem)
        files.append(File.generated(config, f"notebooks/{notebook.stem}.md", content=markdown))
        for name, png in figures.items():
            files.append(File.generated(config, f"notebooks/{name}", content=png))
    return files
