"""Draw docs/search_page.png: `freebind serve INDEX` in headless chromium with a text query,
the at-expertise preset and every item modality shown.

    .venv/bin/python scripts/search_screenshot.py INDEX [--query "…"] [-o docs/search_page.png]

Needs Debian's chromium and chromium-driver, and selenium (the browser test's tools)."""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_search_browser import card_ids, chrome, free_port, start_server  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("index")
    ap.add_argument("--query", default="a loud dog barks repeatedly")
    ap.add_argument("--preset", default="at-expertise")
    ap.add_argument("-o", "--output", default="docs/search_page.png")
    args = ap.parse_args()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = start_server(Path(args.index), port, env)
    driver = chrome()
    try:
        driver.set_window_size(1280, 1010)
        wait = WebDriverWait(driver, 60)
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        Select(driver.find_element(By.ID, "preset")).select_by_value(args.preset)
        Select(driver.find_element(By.ID, "k")).select_by_visible_text("10")
        box = driver.find_element(By.ID, "q")
        box.send_keys(args.query)
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: len(card_ids(d)) == 10)
        first = card_ids(driver)
        Select(driver.find_element(By.ID, "modality")).select_by_value("image")
        wait.until(lambda d: card_ids(d) != first)
        Select(driver.find_element(By.ID, "modality")).select_by_value("")
        wait.until(lambda d: card_ids(d) == first)
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('.card img')].every(i => i.complete)"))
        driver.save_screenshot(args.output)
        print(f"wrote {args.output}: {len(first)} results")
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()
