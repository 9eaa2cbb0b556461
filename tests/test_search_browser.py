"""The search page in a real browser: Debian's chromium, headless, driven by selenium through
chromium-driver, against `freebind serve` started on a free port."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

selenium = pytest.importorskip("selenium")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from tests.search_world import make_index  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index_dir: Path, port: int, env=None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "freebind_cli.main", "serve", str(index_dir),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {proc.stdout.read()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("serve did not answer within 60 s")


def chrome() -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER),
                            options=opts)


def card_ids(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('.card')].map(c => c.dataset.id)")


def drive(url: str, query: str, upload: Path, screenshot: Path, slider: str = "f-b2-audio",
          settle=None) -> dict:
    """Type a query, see results; move a slider, see the order change; upload a file, see
    its results; save a screenshot. Returns what was seen."""
    driver = chrome()
    wait = WebDriverWait(driver, 30)
    try:
        driver.get(url)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        box = driver.find_element(By.ID, "q")
        box.send_keys(query)
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: len(card_ids(d)) > 0)
        first = card_ids(driver)
        status_first = driver.find_element(By.ID, "status").text
        s = driver.find_element(By.ID, slider)
        s.click()
        s.send_keys(Keys.END)  # the expert's side only: factor 1.0
        wait.until(lambda d: card_ids(d) != first)
        moved = card_ids(driver)
        value = driver.find_element(By.ID, slider + "-v").text
        Select(driver.find_element(By.ID, "modality")).select_by_value("image")
        wait.until(lambda d: d.execute_script(
            "const c = [...document.querySelectorAll('.card .tag')];"
            "return c.length > 0 && c.every(t => t.textContent === 'image')"))
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('.card img')].every(i => i.complete)"))
        thumbs = driver.execute_script("return document.querySelectorAll('.card img').length")
        loaded = driver.execute_script(
            "return [...document.querySelectorAll('.card img')].filter(i => i.naturalWidth > 0)"
            ".length")
        if settle:
            settle(driver)
        driver.save_screenshot(str(screenshot))
        Select(driver.find_element(By.ID, "modality")).select_by_value("audio")
        driver.find_element(By.ID, "file").send_keys(str(upload))
        wait.until(lambda d: upload.name in d.find_element(By.ID, "upload-name").text)
        wait.until(lambda d: "results for audio" in d.find_element(By.ID, "status").text)
        uploaded = card_ids(driver)
        first_card = driver.execute_script("return document.querySelector('.card').innerText")
        players = driver.execute_script("return document.querySelectorAll('.card audio').length")
        return {"first": first, "moved": moved, "uploaded": uploaded, "value": value,
                "status": status_first, "first_card": first_card, "players": players,
                "thumbs": thumbs, "thumbs_loaded": loaded}
    finally:
        driver.quit()


def test_page_in_chromium(tmp_path):
    index_dir = make_index(tmp_path)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = start_server(index_dir, port, env)
    try:
        wav = sorted((tmp_path / "pools" / "audio").glob("*.wav"))[5]
        seen = drive(f"http://127.0.0.1:{port}/", "a loud dog barks", wav,
                     tmp_path / "page.png")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert len(seen["first"]) == 20 and "results for" in seen["status"]
    assert seen["moved"] != seen["first"] and sorted(seen["moved"]) != []
    assert seen["value"] == "1.00"
    assert seen["uploaded"] and seen["uploaded"] != seen["moved"]
    assert "1.0000" in seen["first_card"]  # the uploaded clip finds itself first
    assert seen["players"] > 0 and seen["thumbs"] > 0
    assert seen["thumbs_loaded"] == seen["thumbs"]  # thumbnails come from /api/media/<id>
    png = (tmp_path / "page.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 10_000
