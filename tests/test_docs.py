"""The documentation site (mkdocs.yml, docs/): every public name has an API reference
entry, every page is in the navigation, the code on the pages runs as printed, the
generated pages hold what the registries hold, and ``mkdocs build --strict`` (any
warning fails it) succeeds and renders entries, formulas and figures.

The strict build here renders the notebooks without running them
(``INNSIGHT_DOCS_EXECUTE=0``; ``make docs`` runs them, and tests/test_notebooks.py
runs them as scripts).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import innsight

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
HOOKS = DOCS / "hooks"
NOTEBOOKS = sorted((DOCS / "notebooks").glob("*.py"))
#: Pages that hooks generate at build time (they have no file in docs/).
GENERATED = {"coverage.md"} | {f"notebooks/{path.stem}.md" for path in NOTEBOOKS}
#: Pages written by hand whose Python blocks are examples to run as printed.
EXAMPLE_PAGES = ["index.md", "dict-format.md", "conventions.md", "plots.md",
                 *sorted(f"methods/{path.name}" for path in (DOCS / "methods").glob("*.md"))]
_ENTRY = re.compile(r"^::: (innsight(?:\.\w+)+)", re.M)


def load_hook(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", HOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nav_pages(nav) -> list[str]:
    """Every page path in a mkdocs ``nav`` tree."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return [page for item in nav for page in nav_pages(item)]


def api_entries() -> list[str]:
    return [name for page in (DOCS / "api").glob("*.md") for name in _ENTRY.findall(page.read_text())]


def test_every_public_name_has_an_api_entry():
    documented = api_entries()
    missing = sorted(set(innsight.__all__) - {name.removeprefix("innsight.") for name in documented})
    assert not missing, f"public names without an entry in docs/api/: {missing}"
    assert len(documented) == len(set(documented)), "a name is documented twice"
    for name in documented:  # no entry for a name that no longer exists
        assert hasattr(innsight, name.removeprefix("innsight.")), name


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    in_nav = nav_pages(config["nav"])
    on_disk = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")
               if "hooks" not in path.parts}
    assert sorted(on_disk - set(in_nav)) == [], "pages missing from the nav of mkdocs.yml"
    assert sorted(set(in_nav) - on_disk - GENERATED) == [], "nav entries without a page"
    assert GENERATED <= set(in_nav), "a generated page (coverage, a notebook) is not in the nav"


@pytest.mark.parametrize("page", EXAMPLE_PAGES)
def test_code_on_the_page_runs_as_printed(page, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks:  # the blocks of a page run in order, in one namespace
        exec(compile(block, f"docs/{page}", "exec"), namespace)


def test_coverage_page_holds_the_registries():
    pytest.importorskip("onnx2torch")
    from innsight.layers import LAYER_TYPES
    from innsight.layers.lrp_rules import LRP_RULES

    page = load_hook("coverage").coverage_page()
    sections = dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", page, re.M | re.S))
    assert set(sections) == {"Layer types and their rules", "PyTorch", "Keras", "ONNX",
                             "scikit-learn", "Model as dict", "timm models"}
    for type_name in LAYER_TYPES:
        assert f"| `{type_name}` |" in sections["Model as dict"]
    for rule in set(LRP_RULES) - {"none"}:
        assert f"| `{rule}` |" in sections["Layer types and their rules"]
    # Conversions the converter tests exercise on real models, in each front-end's table.
    for name in ("`nn.Conv2d`", "`F.scaled_dot_product_attention`", "`Tensor.view`",
                 "`conv2d.default`"):
        assert name in sections["PyTorch"] or name.replace("F.", "torch.") in sections["PyTorch"]
    assert "`Conv2D`" in sections["Keras"] and "`MultiHeadAttention`" in sections["Keras"]
    onnx_rows, refused = sections["ONNX"].split("Operators with no converted module")
    assert "`Gemm`" in onnx_rows and "`Conv`" in onnx_rows
    assert "`TopK`" in refused and "`Gemm`" not in refused
    assert "`MLPClassifier`" in sections["scikit-learn"]
    sweep = json.loads((ROOT / "docs" / "data" / "coverage_timm.json").read_text())
    for row in sweep["rows"]:  # one table row per model of the last timm sweep
        assert f"| {row['model']} |" in sections["timm models"] or \
            f"| `{row['model']}` |" in sections["timm models"]


def test_notebook_outputs_become_markdown_and_figures():
    nbformat = pytest.importorskip("nbformat")
    png = base64.b64decode(  # a 1x1 PNG
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Title\n\nSome text."),
        nbformat.v4.new_code_cell("print(1)\nfigure", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="1\n"),
            nbformat.v4.new_output("display_data", data={  # a live progress bar: dropped
                "application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                "text/plain": "batches: 0%"}),
            nbformat.v4.new_output("stream", name="stderr", text="run: 0%\rrun: 100%\n"),
            nbformat.v4.new_output("display_data", data={
                "image/png": base64.b64encode(png).decode(), "text/plain": "<Figure>"}),
            nbformat.v4.new_output("execute_result", data={
                "text/html": "<table><tr><td>7</td></tr></table>", "text/plain": "7"},
                execution_count=1),
        ]),
    ])
    markdown, figures = load_hook("notebooks").render(nb, "lesson")
    assert figures == {"lesson/figure_1.png": png}
    parts = markdown.split("\n\n")
    assert parts[:3] == ["# Title", "Some text.", "```python\nprint(1)\nfigure\n```"]
    assert parts[3] == "```text\n1\n```"
    assert parts[4] == "```text\nrun: 100%\n```"  # as a terminal shows it
    assert parts[5] == "![figure 1 of lesson](lesson/figure_1.png)"
    assert "<table><tr><td>7</td></tr></table>" in parts[6]
    assert "batches" not in markdown


def test_strict_build_renders_entries_formulas_and_figures(tmp_path):
    pytest.importorskip("mkdocs")
    site = tmp_path / "site"
    env = {**os.environ, "INNSIGHT_DOCS_EXECUTE": "0", "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    assert "WARNING" not in done.stderr, done.stderr[-5000:]
    api = "".join(path.read_text() for path in (site / "api").glob("*.html"))
    for name in innsight.__all__:
        assert f'id="innsight.{name}"' in api, f"no rendered API entry for {name}"
    lrp = (site / "methods" / "lrp.html").read_text()
    assert "<math" in lrp and "arithmatex" not in lrp  # formulas became MathML
    gallery = (site / "gallery" / "index.html").read_text()  # from gallery/README.md
    for image in re.findall(r'src="([^"]+\.png)"', gallery):
        assert (site / "gallery" / image).exists(), image
    assert (site / "coverage.html").exists()
    for notebook in NOTEBOOKS:
        assert (site / "notebooks" / f"{notebook.stem}.html").exists()
