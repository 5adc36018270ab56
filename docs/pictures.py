"""Make the README's pictures from a real report: a screenshot of its first screen and one figure
per analysis, taken in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

    .venv/bin/workbench report --out report.html
    .venv/bin/python docs/pictures.py report.html          # writes docs/images/*.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
# picture name -> (report section id suffix, index of the figure in that section)
FIGURES = {
    "super_weights": ("super-weights", 1),
    "super_weight_trace": ("super-weight-trace", 2),
    "heads": ("head-composition", 2),
    "bilinear": ("bilinear-spectrum", 1),
    "attribution": ("reagent", 0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "images")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    url = args.report.resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
        page.route("**/*", lambda route: route.continue_() if route.request.url == url else route.abort())
        page.goto(url, wait_until="load")
        page.wait_for_timeout(1500)  # plotly draws after load
        page.screenshot(path=str(args.out / "report.png"))
        for name, (section, index) in FIGURES.items():
            plot = page.locator(f"section[id$='-{section}'] .js-plotly-plot").nth(index)
            plot.scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            plot.screenshot(path=str(args.out / f"{name}.png"))
            print("wrote", args.out / f"{name}.png")
        browser.close()


if __name__ == "__main__":
    main()
