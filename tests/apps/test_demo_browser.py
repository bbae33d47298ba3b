"""`emvision demo` in a real browser: Debian's Chromium, driven by Selenium through the system chromedriver.

The app runs as a user starts it (`emvision demo`, small saved models, a free port on 127.0.0.1); the test
uploads a real micrograph, presses Analyse, waits for the class chart and the answers, checks that the
predicted label is the classifier's, and saves a screenshot (also to $EMVISION_DEMO_SCREENSHOT when set).
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ports import free_port

from emvision.apps.models import Classifier

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Chromium is not installed: apt-get install chromium chromium-driver (the README's test command does)",
)
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1900",
]
MICROGRAPH = "Nanowires/L6_0a6f18702a4a32677c74ed390f3af7af.jpg"


@pytest.fixture()
def demo_url(hnf_folder, mvaema_folder, tmp_path):
    port = free_port()
    log = open(tmp_path / "demo.log", "w")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "emvision.apps.cli", "demo", "--model", str(mvaema_folder), "--classifier", str(hnf_folder),
               "--port", str(port), "--max_new_tokens", "6", "--device", "cpu"]
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"emvision demo exited with {server.returncode}:\n{(tmp_path / 'demo.log').read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"emvision demo did not answer on {url} within 120 s:\n{(tmp_path / 'demo.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture()
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must never try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_upload_a_micrograph_and_see_classes_answers_and_heatmaps(demo_url, browser, hnf_folder, real_sem_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    micrograph = real_sem_dir / MICROGRAPH
    classifier = Classifier(hnf_folder, "cpu")
    expected = classifier.labels[int(classifier.probabilities(classifier.pixel_values([str(micrograph)]))[0].argmax())]

    started = time.monotonic()
    browser.get(demo_url)
    wait = WebDriverWait(browser, 120)
    upload = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#micrograph input[type=file]")))
    upload.send_keys(str(micrograph))
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#micrograph img")))
    browser.find_element(By.CSS_SELECTOR, "#analyse").click()

    wait.until(ready.text_to_be_present_in_element((By.CSS_SELECTOR, "#prediction"), "Predicted:"))
    wait.until(ready.text_to_be_present_in_element((By.CSS_SELECTOR, "#families"), "Size and Distribution"))
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#attention img")))
    prediction = browser.find_element(By.CSS_SELECTOR, "#prediction").text
    assert f"Predicted: {expected}" in prediction
    assert expected in browser.find_element(By.CSS_SELECTOR, "#classes").text
    assert "information bar: rows" in browser.find_element(By.CSS_SELECTOR, "#frame_text").text
    for panel in ("#frame img", "#saliency img", "#attention img"):
        assert browser.find_element(By.CSS_SELECTOR, panel).get_attribute("src")
    elapsed = time.monotonic() - started
    # offline: every resource the page loaded came from the app itself (no web fonts, no CDN)
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(entry => entry.name)")
    assert resources and all(name.startswith((demo_url, "data:", "blob:")) for name in resources), resources

    screenshot = tmp_path / "demo.png"
    assert browser.save_screenshot(str(screenshot))
    if os.environ.get("EMVISION_DEMO_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["EMVISION_DEMO_SCREENSHOT"])
    assert screenshot.stat().st_size > 10_000
    print(f"browser: page, upload and analysis in {elapsed:.1f} s; screenshot {screenshot}")
