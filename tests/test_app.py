"""The demo page in a real browser: headless Chromium uploads an image and reads the caption off the page."""

import importlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import REPO, distinct_images

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


def require(condition: bool, what: str):
    """CI installs everything this test needs (.ci/run), so there a missing piece fails; elsewhere it skips."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {what}")
        pytest.skip(what)


def need_module(name: str):
    require(importlib.util.find_spec(name.split(".")[0]) is not None, f"{name} is not installed")
    return importlib.import_module(name)


def serve(model_folder):
    """app.py on a free port, serving `model_folder`: its URL, until the test module ends."""
    require(os.path.exists(CHROMIUM), "Debian's chromium is not installed")
    need_module("gradio")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--model", str(model_folder), "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"the app did not start:\n{server.stdout.read()[-3000:]}")
            time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def app_url(short_run):
    yield from serve(short_run[0])


@pytest.fixture(scope="module")
def questions_app_url(vqa_run):
    yield from serve(vqa_run[0])


def caption_in_browser(url: str, path: str | None = None, example: int | None = None) -> tuple[str, str]:
    """Uploads `path`, or clicks the `example`-th example, then presses Caption: (the caption or answer on the page,
    the prompt that was in the prompt box)."""
    with need_module("playwright.sync_api").sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.goto(url)
        if example is None:
            page.locator("#upload input[type=file]").set_input_files(path)
        else:
            page.locator("#examples button").nth(example).click()
        # The server hands the file to the page: until then the box still offers to take one.
        page.locator("#upload").get_by_text("Drop File Here").wait_for(state="hidden", timeout=60000)
        page.locator("#caption-button").click()
        box = page.locator("#caption textarea")
        page.wait_for_function("element => element.value.length > 0", arg=box.element_handle(), timeout=60000)
        text, prompt = box.input_value(), page.locator("#prompt textarea").input_value()
        browser.close()
        return text, prompt


def test_upload_an_image_and_read_its_caption(app_url, short_run, tmp_path):
    from transformers import pipeline

    path = str(tmp_path / "scene.png")
    distinct_images(1, size=64)[0].save(path)
    expected = pipeline("image-to-text", model=str(short_run[0]), trust_remote_code=True)(path)[0]["generated_text"]
    assert caption_in_browser(app_url, path) == (expected, "")


def test_a_non_image_upload_gets_a_readable_message(app_url, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not a picture")
    message, _ = caption_in_browser(app_url, str(path))
    assert message.startswith("Could not read notes.txt as an image")


def test_click_an_example_scene_and_caption_it(app_url, short_run):
    """The page offers the test scenes the model folder carries; one click loads one, as an upload would."""
    import json

    from transformers import pipeline

    examples = json.loads((short_run[0] / "examples" / "examples.json").read_text())
    first = str(short_run[0] / examples[0]["file"])
    expected = pipeline("image-to-text", model=str(short_run[0]), trust_remote_code=True)(first)[0]["generated_text"]
    assert caption_in_browser(app_url, example=0) == (expected, "")
    assert expected == examples[0]["caption"]


def test_click_a_question_about_a_scene_and_read_the_answer(questions_app_url, vqa_run):
    """A questions model's page offers its test scenes with questions too; one click fills the image and the prompt,
    and the page answers as the pipeline does."""
    import json

    from transformers import pipeline

    examples = json.loads((vqa_run[0] / "examples" / "examples.json").read_text())
    number, asked = next((n, example) for n, example in enumerate(examples) if example["prompt"])
    path = str(vqa_run[0] / asked["file"])
    answerer = pipeline("image-to-text", model=str(vqa_run[0]), trust_remote_code=True)
    expected = answerer(path, prompt=asked["prompt"])[0]["generated_text"]
    assert caption_in_browser(questions_app_url, example=number) == (expected, asked["prompt"])
