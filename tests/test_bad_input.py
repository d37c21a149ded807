"""Bad images: converted to RGB where that means something, otherwise an error that names the input."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import CAPTIONS, distinct_images
from PIL import Image
from transformers import pipeline

from modeling_vitgpt2 import ImageLoadError, load_image


def write_bad_files(folder):
    jpeg = io.BytesIO()
    distinct_images(1, size=256)[0].save(jpeg, format="JPEG")
    files = {
        "missing.jpg": None,
        "empty.jpg": b"",
        "text.jpg": b"this is a caption, not a picture\n",
        "truncated.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
    }
    paths = {}
    for name, content in files.items():
        paths[name] = folder / name
        if content is not None:
            paths[name].write_bytes(content)
    return paths


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing.jpg", "no such file"),
        ("empty.jpg", "empty file"),
        ("text.jpg", "not an image"),
        ("truncated.jpg", "truncated or corrupt"),
    ],
)
def test_unreadable_files_raise_an_error_naming_them(tmp_path, name, message):
    path = write_bad_files(tmp_path)[name]
    with pytest.raises(ImageLoadError, match=message) as error:
        load_image(path)
    assert str(path) in str(error.value)


def rgb_at(image, xy=(0, 0)):
    return load_image(image).getpixel(xy)


def test_channel_counts_and_depths_become_rgb(tmp_path):
    gray = Image.new("L", (8, 8), 200)
    assert rgb_at(gray) == (200, 200, 200)
    assert rgb_at(Image.new("LA", (8, 8), (100, 0))) == (255, 255, 255)  # fully transparent -> white background
    assert rgb_at(Image.new("LA", (8, 8), (100, 255))) == (100, 100, 100)
    assert rgb_at(Image.new("RGBA", (8, 8), (10, 20, 30, 255))) == (10, 20, 30)
    assert rgb_at(Image.new("RGBA", (8, 8), (10, 20, 30, 0))) == (255, 255, 255)
    assert load_image(Image.new("CMYK", (8, 8), (0, 0, 0, 0))).mode == "RGB"

    sixteen = tmp_path / "sixteen.png"
    Image.fromarray(np.array([[0, 32896, 65535, 65535]], dtype=np.uint16)).save(sixteen)
    assert Image.open(sixteen).mode.startswith("I")
    loaded = load_image(sixteen)
    assert [loaded.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]

    palette = Image.new("P", (4, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    palette_path = tmp_path / "palette.png"
    palette.save(palette_path, transparency=0)
    assert rgb_at(palette_path, (0, 0)) == (255, 255, 255)
    assert rgb_at(palette_path, (1, 0)) == (0, 0, 255)


def test_tiny_and_huge_images_caption(tmp_path, trained_dir):
    huge = tmp_path / "huge.jpg"
    Image.new("RGB", (9000, 7000), (30, 120, 200)).save(huge, quality=50)
    loaded = load_image(huge)
    assert max(loaded.size) <= 2048 and loaded.mode == "RGB"
    captioner = pipeline("image-to-text", model=str(trained_dir), trust_remote_code=True)
    for image in (Image.new("RGB", (1, 1), (255, 0, 0)), str(huge)):
        assert isinstance(captioner(image)[0]["generated_text"], str)


def test_pipeline_names_the_bad_input(tmp_path, trained_dir):
    captioner = pipeline("image-to-text", model=str(trained_dir), trust_remote_code=True)
    path = write_bad_files(tmp_path)["text.jpg"]
    # The pipeline runs the folder's copy of the code, whose ImageLoadError is a ValueError like ours.
    with pytest.raises(ValueError, match="text.jpg: not an image"):
        captioner(str(path))


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "modeling_vitgpt2", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_cli_captions_the_good_images_and_reports_the_bad(tmp_path, trained_dir):
    good = []
    for index, image in enumerate(distinct_images(3)):
        good.append(tmp_path / f"good{index}.png")
        image.save(good[-1])
    bad = write_bad_files(tmp_path)
    order = [good[0], bad["missing.jpg"], good[1], bad["truncated.jpg"], bad["empty.jpg"], good[2], bad["text.jpg"]]

    result = run_cli("caption", *order, "--model", trained_dir)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines == [f"{path}\t{text}" for path, text in zip(good, CAPTIONS)]
    for name in ("missing.jpg", "truncated.jpg", "empty.jpg", "text.jpg"):
        assert str(bad[name]) in result.stderr
    assert "4 of 7 images could not be captioned" in result.stderr
    assert "Traceback" not in result.stderr

    as_json = json.loads(run_cli("caption", good[0], bad["text.jpg"], "--model", trained_dir, "--json").stdout)
    assert as_json[0] == {"image": str(good[0]), "caption": CAPTIONS[0]}
    assert as_json[1]["image"] == str(bad["text.jpg"]) and "not an image" in as_json[1]["error"]

    ok = run_cli("caption", *good, "--model", trained_dir, "--num-beams", "2")
    assert ok.returncode == 0 and len(ok.stdout.strip().splitlines()) == 3


def test_cli_help_explains():
    result = run_cli("caption", "--help")
    assert result.returncode == 0
    for words in ("--model", "--json", "PATH<TAB>caption", "exit status"):
        assert words in result.stdout


def test_image_urls_are_fetched_and_a_dead_one_reports_its_http_status():
    """A loopback HTTP server: a real PNG, a 404, and a page that is not an image."""
    import http.server
    import threading

    png = io.BytesIO()
    distinct_images(1)[0].save(png, format="PNG")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"/ok.png": png.getvalue(), "/page.html": b"<html>not a picture</html>"}.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"no such picture")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert load_image(f"{base}/ok.png").getpixel((0, 0)) == distinct_images(1)[0].getpixel((0, 0))
        with pytest.raises(ImageLoadError, match=r"gone\.png: could not download \(HTTP 404"):
            load_image(f"{base}/gone.png")
        with pytest.raises(ImageLoadError, match=r"page\.html: not an image file"):
            load_image(f"{base}/page.html")
    finally:
        server.shutdown()
    with pytest.raises(ImageLoadError, match="could not download"):
        load_image(f"{base}/ok.png")  # the server is gone: a network error, named
