"""Build plots/offline.html, the HTML template `dvc plots show` and `dvc plots diff` fill
(.dvc/config: plots.html_template), with vega, vega-lite and vega-embed inlined so the page
renders from disk with no network, and plots/vendor/LICENSES.txt, the licences of every
package those bundles were built from.

    cd plots/vendor && npm ci --ignore-scripts && cd ../.. && python plots/build_template.py

The pinned versions live in plots/vendor/package.json and package-lock.json.
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = HERE / "vendor" / "node_modules"
BUNDLES = (  # load order: vega-embed's UMD build looks up the globals vega and vegaLite
    "vega/build/vega.min.js",
    "vega-lite/build/vega-lite.min.js",
    "vega-embed/build/vega-embed.min.js",
)
PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")  # dvc-render's (dvc_render.html)
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- offline: %(versions)s inlined by plots/build_template.py -->
%(scripts)s
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def bundle_script(relative: str) -> str:
    """One bundle as an inline <script>; refuses text that would end it or fill a placeholder."""
    code = (MODULES / relative).read_text(encoding="utf8")
    for bad in ("</script", *PLACEHOLDERS):
        if bad in code:
            raise ValueError(f"{relative} contains {bad!r}: it cannot be inlined")
    return f"<script>\n{code}\n</script>"


def version(package: str) -> str:
    return json.loads((MODULES / package / "package.json").read_text())["version"]


def packages() -> list:
    """Every installed package's folder, nested ones (node_modules/a/node_modules/b) included."""
    found = (p.parent for p in MODULES.parent.glob("node_modules/**/package.json"))
    return sorted({f for f in found if "node_modules" in (f.parent.name, f.parent.parent.name)})


def licences() -> str:
    """The licence texts of every installed package (the bundles include many of them), each
    text once with the packages that carry it; packages without a file give their licence field."""
    by_text = {}
    for folder in packages():
        meta = json.loads((folder / "package.json").read_text())
        if "name" not in meta:  # a build folder's package.json (type: module), no package
            continue
        files = sorted(folder.glob("LICEN[CS]E*"))
        text = "\n".join(t.read_text(encoding="utf8").strip() for t in files)
        text = text or f"(no licence file; package.json says {meta.get('license')})"
        by_text.setdefault(text, []).append(f"{meta['name']}@{meta['version']}")
    return "\n\n".join(f"== {', '.join(names)}\n{text}" for text, names in by_text.items()) + "\n"


def main() -> None:
    versions = ", ".join(f"{p}@{version(p)}" for p in ("vega", "vega-lite", "vega-embed"))
    scripts = "\n".join(bundle_script(b) for b in BUNDLES)
    (HERE / "offline.html").write_text(PAGE % {"versions": versions, "scripts": scripts})
    (HERE / "vendor" / "LICENSES.txt").write_text(licences())
    print(f"plots/offline.html: {versions}")


if __name__ == "__main__":
    main()
