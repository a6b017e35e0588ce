"""An HTML template for ``dvc plots show`` that draws the plots without the internet.

DVC's page loads vega, vega-lite and vega-embed from a CDN (its ``{scripts}`` placeholder), so
offline it stays blank. This template has no ``{scripts}``: it inlines the same three
libraries from the copies Snakemake ships for its own report (a dependency of this project,
so no download), and keeps DVC's other placeholders. The file is about 2 MB, written where
the user asks; nothing of it is committed.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from apot.errors import UserError
from apot.layout import write_text_atomic

# Snakemake's bundled assets (snakemake/assets/data/...), in load order.
LIBRARIES = ("vega/vega.js", "vega-lite/vega-lite.js", "vega-embed/vega-embed.js")
PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>DVC plots (offline)</title>
{scripts}
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def offline_template() -> str:
    """The template's text: DVC's placeholders {plot_divs} and {refresh_tag}, the libraries
    inline."""
    data = files("snakemake.assets") / "data"
    scripts = []
    for name in LIBRARIES:
        path = data / name
        if not path.is_file():
            raise UserError(f"{name} is not among Snakemake's bundled assets ({data}); "
                            f"reinstall snakemake (pip install 'snakemake[reports]')")
        text = path.read_text(encoding="utf-8")
        if "</script" in text.lower():  # would end the inline script early
            raise UserError(f"{name} cannot be inlined: it contains a closing script tag")
        scripts.append(f"<script>/* {name}, from Snakemake's bundled assets */\n{text}\n</script>")
    return PAGE.format(scripts="\n".join(scripts))


def write_offline_template(out: str | Path) -> dict:
    """Write the template to ``out`` (atomically); what ``apot dvc-plots-template`` prints."""
    text = offline_template()
    write_text_atomic(out, text)
    return {"out": str(out), "bytes": len(text.encode("utf-8")), "libraries": list(LIBRARIES),
            "use": f"dvc plots show --html-template {out}"}
