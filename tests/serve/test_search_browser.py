"""The search page in a real browser: Debian's chromium, headless, driven by selenium through
chromium-driver, against `freebind serve` started on a free port."""

import os
import shutil
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

from live_server import free_port  # noqa: E402
from search_world import make_index  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver")


KEY = "browser-test-key-" + "k" * 20


def start_server(index_dir: Path, port: int, env=None) -> subprocess.Popen:
    """`freebind serve` on ``port``, waited for (with FREEBIND_API_KEY in ``env``, the wait
    sends it as a Bearer header)."""
    proc = subprocess.Popen([sys.executable, "-m", "freebind_cli.main", "serve", str(index_dir),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {proc.stdout.read()}")
        try:
            key = (env or {}).get("FREEBIND_API_KEY")
            urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/api/info",
                headers={"Authorization": f"Bearer {key}"} if key else {}), timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("serve did not answer within 60 s")


def chrome(width: int = 1280, height: int = 900, mobile: bool = False) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--force-device-scale-factor=1",
                "--hide-scrollbars"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER),
                              options=opts)
    # the viewport itself (a headless window's outer size is not its viewport)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1,
                            "mobile": mobile})
    return driver


def card_ids(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('.card')].map(c => c.dataset.id)")


def js(driver, script):
    return driver.execute_script(script)


def ready(driver, wait):
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))


def settled(driver, wait):
    """No search in flight and every thumbnail loaded."""
    wait.until(lambda d: not js(d, "return document.body.classList.contains('loading')"))
    wait.until(lambda d: js(d, "return [...document.querySelectorAll('.card img')]"
                               ".every(i => i.complete || i.getBoundingClientRect().top > "
                               "innerHeight + 600)"))  # lazy ones far below wait


def tab(driver, modality):
    driver.find_element(By.CSS_SELECTOR, f'#tabs .tab[data-modality="{modality}"]').click()


def sign_in(driver, url: str, key: str, wait) -> None:
    """The login form, as a person fills it in."""
    if not driver.current_url.endswith("/login"):
        driver.get(url.rstrip("/") + "/login")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "sign-in").click()
    wait.until(lambda d: not d.current_url.endswith("/login"))


def drive(url: str, query: str, upload: Path, shots: Path, slider: str = "f-b2-audio",
          key: str | None = None) -> dict:
    """Every part of the page, as a person would use it (signing in first with ``key``).
    Returns what was seen."""
    seen = {}
    driver = chrome()
    wait = WebDriverWait(driver, 30)
    try:
        driver.get(url)
        if key is not None:
            seen["login_url"] = driver.current_url
            sign_in(driver, url, key, wait)
            seen["cookie_http_only"] = [c.get("httpOnly") for c in driver.get_cookies()]
            seen["cookie_in_js"] = js(driver, "return document.cookie")
        ready(driver, wait)
        seen["empty"] = driver.find_element(By.ID, "empty").is_displayed()
        seen["examples"] = js(driver, "return document.querySelectorAll('#examples button')"
                                      ".length")
        seen["favicon"] = js(driver, "return document.querySelector('link[rel=icon]').href")
        seen["tabs"] = js(driver, "return [...document.querySelectorAll('#tabs .tab')]"
                                  ".map(t => [...t.children].map(c => c.textContent).join(' '))")
        seen["slider_label"] = driver.find_element(By.CSS_SELECTOR, f"label[for={slider}]").text
        seen["slider_tip"] = driver.find_element(By.ID, slider).get_attribute("title")
        box = driver.find_element(By.ID, "q")
        box.send_keys(query)
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: len(card_ids(d)) > 0)
        settled(driver, wait)
        seen["url_first"] = js(driver, "return location.search")
        seen["groups"] = js(driver, "return [...document.querySelectorAll('.group h2')]"
                                    ".map(h => h.firstChild.textContent)")
        seen["group_tags"] = js(driver, "return [...document.querySelectorAll('.group')].map("
                                        "g => [...new Set([...g.querySelectorAll('.tag')]"
                                        ".map(t => t.textContent))])")
        seen["status"] = driver.find_element(By.ID, "status").text
        driver.save_screenshot(str(shots / "all.png"))
        tab(driver, "audio")
        wait.until(lambda d: js(d, "const c = [...document.querySelectorAll('.card .tag')];"
                                   "return c.length > 0 && c.every(t => t.textContent === "
                                   "'audio') && !document.querySelector('.group')"))
        settled(driver, wait)
        first = card_ids(driver)
        seen["first"] = first
        seen["waves"] = js(driver, "return [...document.querySelectorAll('.card img.wave')]"
                                   ".filter(i => i.naturalWidth > 0).length")
        seen["durations"] = js(driver, "return [...document.querySelectorAll('.card "
                                       ".duration')].map(d => d.textContent)")
        seen["captions"] = js(driver, "return [...document.querySelectorAll('.card .caption')]"
                                      ".map(d => d.textContent)")
        s = driver.find_element(By.ID, slider)
        s.click()
        s.send_keys(Keys.END)  # the expert's side only: factor 1.0
        wait.until(lambda d: card_ids(d) != first)
        seen["moved"] = card_ids(driver)
        seen["value"] = driver.find_element(By.ID, slider + "-v").text
        seen["preset_after_slider"] = Select(driver.find_element(By.ID, "preset")) \
            .first_selected_option.get_attribute("value")
        wait.until(lambda d: "f=" in js(d, "return location.search"))
        seen["url_custom"] = js(driver, "return decodeURIComponent(location.search)")
        tab(driver, "image")
        wait.until(lambda d: js(d, "const c = [...document.querySelectorAll('.card .tag')];"
                                   "return c.length > 0 && c.every(t => t.textContent === "
                                   "'image')"))
        settled(driver, wait)
        seen["thumbs"] = js(driver, "return document.querySelectorAll('.card img').length")
        seen["thumbs_loaded"] = js(driver, "return [...document.querySelectorAll('.card img')]"
                                           ".filter(i => i.naturalWidth > 0).length")
        # more like this: the box empties, the item is shown as the query, the URL says so
        driver.find_element(By.CSS_SELECTOR, ".card .more").click()
        wait.until(lambda d: "item=" in js(d, "return location.search"))
        settled(driver, wait)
        seen["box_after_more"] = driver.find_element(By.ID, "q").get_attribute("value")
        seen["active_more"] = driver.find_element(By.ID, "active").text
        seen["active_img"] = js(driver, "return !!document.querySelector('#active img')")
        # back: the text query and its factors come back
        driver.back()
        wait.until(lambda d: "item=" not in js(d, "return location.search"))
        wait.until(lambda d: d.find_element(By.ID, "q").get_attribute("value") == query)
        settled(driver, wait)
        seen["back_active_hidden"] = not driver.find_element(By.ID, "active").is_displayed()
        # upload: the box empties, the file is shown as the query
        tab(driver, "audio")
        settled(driver, wait)
        driver.find_element(By.ID, "file").send_keys(str(upload))
        wait.until(lambda d: upload.name in d.find_element(By.ID, "active").text)
        wait.until(lambda d: "results for audio" in d.find_element(By.ID, "status").text)
        settled(driver, wait)
        seen["box_after_upload"] = driver.find_element(By.ID, "q").get_attribute("value")
        seen["upload_preview"] = js(driver, "return !!document.querySelector('#active audio')")
        seen["uploaded"] = card_ids(driver)
        seen["first_card"] = js(driver, "return document.querySelector('.card').innerText")
        seen["players"] = js(driver, "return document.querySelectorAll('.card audio').length")
        # a shared URL opens the same search
        shared = js(driver, "return location.href")
        seen["shared"] = shared
        # an error keeps the old results, dimmed
        js(driver, "history.pushState(null, '', '?upload=expired&name=x.wav&m=audio');"
                   "dispatchEvent(new PopStateEvent('popstate'))")
        wait.until(lambda d: "error" in d.find_element(By.ID, "status").get_attribute("class"))
        seen["error"] = driver.find_element(By.ID, "status").text
        seen["stale"] = js(driver, "return document.getElementById('results').classList"
                                   ".contains('stale') && document.querySelectorAll('.card')"
                                   ".length > 0")
        def opacity(d):
            return float(js(d, "return getComputedStyle(document.getElementById('results'))"
                               ".opacity"))

        # the dimming is a 0.15 s transition: wait for it to end (or the wait to time out)
        try:
            wait.until(lambda d: opacity(d) < 0.5)
        except Exception:   # noqa: BLE001  (the assert below reports the value)
            pass
        seen["opacity"] = opacity(driver)
    finally:
        driver.quit()
    # the phone: controls folded, two columns
    driver = chrome(390, 844, mobile=True)
    try:
        if key is not None:
            sign_in(driver, url, key, WebDriverWait(driver, 30))
        driver.get(url + "?q=" + query.replace(" ", "+") + "&m=image")
        ready(driver, wait := WebDriverWait(driver, 30))
        wait.until(lambda d: len(card_ids(d)) > 0)
        settled(driver, wait)
        seen["phone_q"] = driver.find_element(By.ID, "q").get_attribute("value")
        seen["phone_folded"] = js(driver, "return !document.getElementById('controls').open")
        seen["phone_columns"] = js(driver, "return getComputedStyle(document.querySelector("
                                           "'.grid')).gridTemplateColumns.split(' ').length")
        seen["phone_width"] = js(driver, "return document.documentElement.scrollWidth")
        driver.save_screenshot(str(shots / "phone.png"))
    finally:
        driver.quit()
    return seen


def test_page_in_chromium(tmp_path):
    index_dir = make_index(tmp_path)
    port = free_port()
    env = {**os.environ, "FREEBIND_API_KEY": KEY,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = start_server(index_dir, port, env)
    try:
        wav = sorted((tmp_path / "pools" / "audio").glob("*.wav"))[5]
        seen = drive(f"http://127.0.0.1:{port}/", "a loud dog barks", wav, tmp_path,
                     key=KEY)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    # signed in once: the page came from /login, the session cookie is HttpOnly
    assert seen["login_url"].endswith("/login")
    assert seen["cookie_http_only"] == [True] and seen["cookie_in_js"] == ""
    # empty state, favicon, tabs with counts, sliders in words
    assert seen["empty"] and seen["examples"] >= 3
    assert seen["favicon"].endswith("/static/favicon.svg")
    assert seen["tabs"] == ["All 48", "Audio 24", "Images 24"]
    assert "Audio: blend in mini:clap" == seen["slider_label"]
    assert seen["slider_tip"].startswith("b2.audio")
    # the all view: one group per modality, none hidden by the other
    assert seen["groups"] == ["Audio", "Images"]
    assert seen["group_tags"] == [["audio"], ["image"]]
    assert "q=a+loud+dog+barks" in seen["url_first"] and "40 results" in seen["status"]
    # audio: waveform, duration, caption
    assert len(seen["first"]) == 20 and seen["waves"] == 20
    assert all(d.startswith("0:0") for d in seen["durations"]) and len(seen["durations"]) == 20
    assert any(c.startswith("caption of ") for c in seen["captions"])
    # a slider: order changes, the preset menu says custom, the URL keeps the factors
    assert seen["moved"] != seen["first"] and seen["value"] == "1.00"
    assert seen["preset_after_slider"] == "custom"
    assert "preset=custom" in seen["url_custom"] and "b2.audio:1" in seen["url_custom"]
    assert seen["thumbs"] > 0 and seen["thumbs_loaded"] == seen["thumbs"]
    # more like this and upload: the box empties, the active query is shown
    assert seen["box_after_more"] == "" and "More like" in seen["active_more"]
    assert seen["active_img"]
    assert seen["back_active_hidden"]
    assert seen["box_after_upload"] == "" and seen["upload_preview"]
    assert seen["uploaded"] and "1.0000" in seen["first_card"]  # the clip finds itself
    assert seen["players"] > 0 and "upload=" in seen["shared"]
    # errors: the message, the old results dimmed
    assert "unknown or expired upload" in seen["error"]
    assert seen["stale"] and seen["opacity"] < 0.5
    # phone: the query from the URL, controls folded, two columns, nothing wider than it
    assert seen["phone_q"] == "a loud dog barks"
    assert seen["phone_folded"] and seen["phone_columns"] == 2
    assert seen["phone_width"] <= 390
    for name in ("all.png", "phone.png"):
        png = (tmp_path / name).read_bytes()
        assert png[:4] == b"\x89PNG" and len(png) > 10_000
