"""Draw docs/search_page.png (1280×900) and docs/search_page_phone.png (390×844):
`freebind serve INDEX` in headless chromium with a text query, the at-expertise preset and
every item modality shown (the phone with its controls folded).

    .venv/bin/python scripts/search_screenshot.py INDEX [--query "…"] [-o docs]

Needs Debian's chromium and chromium-driver, and selenium (the browser test's tools)."""

import argparse
import os
import sys
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_search_browser import (card_ids, chrome, free_port, ready,  # noqa: E402
                                       settled, start_server)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("index")
    ap.add_argument("--query", default="a loud dog barks repeatedly")
    ap.add_argument("--preset", default="at-expertise")
    ap.add_argument("-o", "--output", default="docs")
    args = ap.parse_args()
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = start_server(Path(args.index), port, env)
    query = urllib.parse.urlencode({"q": args.query, "preset": args.preset, "k": "10"})
    try:
        for name, (w, h, mobile) in {"search_page.png": (1280, 900, False),
                                     "search_page_phone.png": (390, 844, True)}.items():
            driver = chrome(w, h, mobile)
            try:
                wait = WebDriverWait(driver, 60)
                driver.get(f"http://127.0.0.1:{port}/?{query}")
                ready(driver, wait)
                wait.until(lambda d: len(card_ids(d)) > 0)
                settled(driver, wait)
                out = Path(args.output) / name
                driver.save_screenshot(str(out))
                print(f"wrote {out}: {len(card_ids(driver))} results")
            finally:
                driver.quit()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()
