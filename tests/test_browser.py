"""The web demo in a real browser: Debian's chromium, driven by Selenium through chromium-driver.

Types a prompt and checks the picture that comes back, uploads a picture and reads its caption,
uploads a file that is not a picture and reads the message, searches, saves a screenshot of
each tab, and checks that the page fetched nothing from outside the machine. Skips, saying
why, where Chromium is not installed (`.ci/run` installs it in CI).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the web demo needs gradio (pip install -e '.[app]')")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (pip install selenium)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ready  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from test_app import bad_files, served  # noqa: E402,F401  (the running app on a tiny checkpoint)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no Chromium here: apt-get install chromium chromium-driver (.ci/run does when it runs as root)",
)
WAIT = 120  # seconds: the model runs on a shared CPU


def start_browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


def visible(browser, css: str):
    return WebDriverWait(browser, WAIT).until(ready.visibility_of_element_located((By.CSS_SELECTOR, css)))


def open_tab(browser, name: str) -> None:
    tab = next(b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text.strip() == name)
    tab.click()


def upload(browser, component: str, path: Path) -> None:
    browser.find_element(By.CSS_SELECTOR, f"#{component} input[type=file]").send_keys(str(path))


def text_to_image(browser, prompt: str) -> Image.Image:
    """Type a prompt, press Generate, wait for the picture; returns it as the server sent it."""
    box = visible(browser, "#t2i-prompt textarea")
    box.clear()
    box.send_keys(prompt)
    browser.find_element(By.CSS_SELECTOR, "#t2i-run").click()
    picture = visible(browser, "#t2i-images img")
    return Image.open(io.BytesIO(httpx.get(picture.get_attribute("src")).content))


def image_to_text(browser, path: Path) -> str:
    open_tab(browser, "Image → text")
    upload(browser, "i2t-image", path)
    visible(browser, "#i2t-image img")
    browser.find_element(By.CSS_SELECTOR, "#i2t-run").click()
    captions = visible(browser, "#i2t-captions textarea")
    WebDriverWait(browser, WAIT).until(lambda _: captions.get_attribute("value").strip())
    return captions.get_attribute("value")


def search(browser, query: str) -> int:
    open_tab(browser, "Search")
    box = visible(browser, "#search-query textarea")
    box.send_keys(query)
    browser.find_element(By.CSS_SELECTOR, "#search-run").click()
    visible(browser, "#search-images img")
    return len(browser.find_elements(By.CSS_SELECTOR, "#search-images img"))


def message_after(browser, action) -> str:
    """The text of the message the page shows after `action` (gradio's toast)."""
    action()
    return visible(browser, "[data-testid=toast-body]").text


def test_the_page_works_in_a_real_browser(browser, served, tmp_path):
    demo, url, root = served
    browser.get(url)
    image = text_to_image(browser, "a large red circle on the left")
    assert image.format == "PNG" and image.size == (28, 28)
    browser.save_screenshot(str(tmp_path / "text-to-image.png"))

    caption = image_to_text(browser, Path(demo.validation.paths[0]))
    assert caption.strip()
    browser.save_screenshot(str(tmp_path / "image-to-text.png"))
    bad = bad_files(root / "bad-browser")["notes"]
    message = message_after(browser, lambda: (upload(browser, "i2t-image", bad),
                                              browser.find_element(By.CSS_SELECTOR, "#i2t-run").click()))
    assert "not a picture that can be read" in message

    assert search(browser, "a small blue square at the top") == len(demo.validation.paths)
    browser.save_screenshot(str(tmp_path / "search.png"))
    for name in ("text-to-image", "image-to-text", "search"):
        assert Image.open(tmp_path / f"{name}.png").size[0] > 0

    # Nothing fetched from outside: every script, style sheet, font and picture came from the app.
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    outside = [address for address in fetched if urlparse(address).hostname not in ("127.0.0.1", None)]
    assert fetched and not outside, outside


def screenshots(checkpoint: str, folder: str, preview: bool = False) -> None:
    """A screenshot of each tab on a real checkpoint, for the docs (`preview`: the fast preview):

        python tests/test_browser.py checkpoints/demo screenshots/ [--preview]
    """
    from test_app import free_port

    from multimodal.app import Demo, build_page, launch
    from multimodal.config import ServeConfig

    config, out = ServeConfig(port=free_port()), Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    demo = Demo.load(checkpoint, config, device="cpu")
    page = build_page(demo)
    driver = start_browser()
    driver.get(launch(page, config, block=False))
    if preview:
        visible(driver, "#t2i-preview input").click()
    text_to_image(driver, "a large red circle on the left")
    driver.save_screenshot(str(out / "text-to-image.png"))
    image_to_text(driver, Path(demo.validation.paths[77]))
    driver.save_screenshot(str(out / "image-to-text.png"))
    search(driver, "a small blue square at the top")
    driver.save_screenshot(str(out / "search.png"))
    driver.quit()
    page.close()


if __name__ == "__main__":
    import sys

    screenshots(*[arg for arg in sys.argv[1:3]], preview="--preview" in sys.argv)
