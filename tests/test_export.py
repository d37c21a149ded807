"""Hub release: the exported folder loads without this repo, on transformers 5.x and 4.x, through every entry point."""

import base64
import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml
from conftest import distinct_images

from modeling_vitgpt2.hub.export import ExportError, export

CONSUMER = textwrap.dedent(
    """
    import base64, json, sys
    sys.modules["modeling_vitgpt2"] = None  # this repo's package must not be importable
    import transformers
    from transformers import AutoModel, AutoProcessor, pipeline
    from PIL import Image

    folder, paths = sys.argv[1], sys.argv[2:]
    sys.path.insert(0, folder)
    from handler import EndpointHandler

    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    images = [Image.open(path) for path in paths]
    ids = model.generate(**processor(images=images, return_tensors="pt"), max_new_tokens=32)
    prompts = ["a red", "two small blue squares", "a"][: len(images)]
    prompted = model.generate(**processor(images=images, text=prompts, return_tensors="pt"), max_new_tokens=8)
    captioner = pipeline("image-to-text", model=folder, trust_remote_code=True)
    handler = EndpointHandler(folder)
    encoded = [base64.b64encode(open(path, "rb").read()).decode() for path in paths]
    print(json.dumps({
        "version": transformers.__version__,
        "generate": processor.batch_decode(ids, skip_special_tokens=True),
        "prompt_ids": processor(text=prompts)["input_ids"].tolist(),
        "prompted": prompted.tolist(),
        "pipeline": [out[0]["generated_text"] for out in captioner(paths, max_new_tokens=32)],
        "handler": [o["generated_text"] for o in handler({"inputs": encoded, "parameters": {"max_new_tokens": 32}})],
    }))
    """
)


@pytest.fixture(scope="module")
def exported(short_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "hub"
    return export(short_run[0], out, repo_id="someone/vitgpt2-shapes")


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for index, image in enumerate(distinct_images(3, size=64)):
        paths.append(str(folder / f"{index}.png"))
        image.save(paths[-1])
    return paths


def consume(python, folder, paths, tmp_path):
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [python, "-I", str(script), str(folder), *paths], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_exported_folder_holds_what_the_hub_needs(exported):
    names = {path.name for path in exported.iterdir()}
    expected = {
        "model.safetensors", "config.json", "generation_config.json", "processor_config.json",
        "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "configuration_vitgpt2.py",
        "modeling_vitgpt2.py", "decoding_vitgpt2.py", "processing_vitgpt2.py", "pipeline_vitgpt2.py",
        "segmentation_vitgpt2.py", "packing_vitgpt2.py", "handler.py",
        "requirements.txt", "README.md", "examples", "training_curves.png",
    }  # fmt: skip
    assert names == expected, names ^ expected
    config = json.loads((exported / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_vitgpt2.VitGpt2ForCaptioning"
    assert config["custom_pipelines"]["image-to-text"]["impl"] == "pipeline_vitgpt2.VitGpt2CaptioningPipeline"


def test_model_card_front_matter_carries_the_run(exported, short_run):
    text = (exported / "README.md").read_text()
    assert text.startswith("---\n") and "\n# vitgpt2-shapes\n" in text
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-to-text"
    assert "custom_code" in meta["tags"] and meta["license"]
    results = {
        (result["dataset"]["split"], metric["type"]): metric["value"]
        for result in meta["model-index"][0]["results"]
        for metric in result["metrics"]
    }
    metrics = json.loads((short_run[0] / "all_results.json").read_text())
    for split in ("test", "test_unseen"):
        assert results[(split, "cider")] == pytest.approx(metrics[f"{split}_cider"], abs=1e-4)
        assert results[(split, "exact_match")] == pytest.approx(metrics[f"{split}_exact_match"], abs=1e-4)
        assert results[(split, "bleu")] == pytest.approx(metrics[f"{split}_bleu4"], abs=1e-4)
    examples = json.loads((exported / "examples" / "examples.json").read_text())
    assert [w["output"]["text"] for w in meta["widget"]] == [e["caption"] for e in examples]
    assert all(
        w["src"].startswith("https://huggingface.co/someone/vitgpt2-shapes/resolve/main/") for w in meta["widget"]
    )
    for section in ("## Architecture", "nn.Linear", "python train.py", "AutoProcessor", "handler.py", "## Limitations"):
        assert section in text
    assert "](training_curves.png)" in text  # the card shows the curves the folder ships


def test_exported_folder_loads_the_same_on_transformers_5_and_4(exported, image_paths, tmp_path):
    latest = consume(sys.executable, exported, image_paths, tmp_path)
    assert latest["version"].startswith("5.")
    assert latest["generate"] == latest["pipeline"] == latest["handler"]

    python4 = os.environ.get("VITGPT2_TRANSFORMERS4_PYTHON")
    if not python4:
        if os.environ.get("CI"):
            pytest.fail("CI must check transformers 4.x: .ci/run sets VITGPT2_TRANSFORMERS4_PYTHON")
        pytest.skip("set VITGPT2_TRANSFORMERS4_PYTHON to a Python with transformers 4.x")
    legacy = consume(python4, exported, image_paths, tmp_path)
    assert legacy["version"].startswith("4.")
    assert legacy["generate"] == legacy["pipeline"] == legacy["handler"] == latest["generate"]
    # A prompt is the same tokens, and continues the same, on both (transformers 4 had dropped the prefix space).
    assert legacy["prompt_ids"] == latest["prompt_ids"] and legacy["prompted"] == latest["prompted"]


def test_handler_answers_bad_requests_and_keeps_serving(exported, image_paths):
    sys.path.insert(0, str(exported))
    try:
        from handler import EndpointHandler
    finally:
        sys.path.remove(str(exported))
    handler = EndpointHandler(str(exported))
    good = base64.b64encode(open(image_paths[0], "rb").read()).decode()
    raw = open(image_paths[0], "rb").read()
    cases = {
        "missing inputs": ({"parameters": {}}, "inputs"),
        "not an image": ({"inputs": base64.b64encode(b"hello world, not a picture").decode()}, "not an image"),
        "broken base64": ({"inputs": "@@@not-base64@@@"}, "base64"),
        "unreachable URL": ({"inputs": "http://127.0.0.1:9/nothing.png"}, "inputs[0]"),
        "bad parameter": ({"inputs": good, "parameters": {"launch_rockets": True}}, "launch_rockets"),
        "parameters not an object": ({"inputs": good, "parameters": 5}, "parameters"),
        "second image bad": ({"inputs": [good, "@@@"]}, "inputs[1]"),
    }
    for name, (request, words) in cases.items():
        answer = handler(request)
        assert isinstance(answer, dict) and words in answer["error"], (name, answer)
        served = handler({"inputs": good})  # still serving
        assert isinstance(served, list) and served[0]["generated_text"]
    assert handler({"inputs": raw}) == handler({"inputs": "data:image/png;base64," + good})
    beams = handler({"inputs": [good, good], "parameters": {"num_beams": 2, "max_new_tokens": 5}})
    assert len(beams) == 2


def test_export_refuses_a_folder_that_is_not_ours(gpt2_dir, tmp_path):
    with pytest.raises(ExportError, match="not a vitgpt2 model"):
        export(gpt2_dir, tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportError, match="missing config.json, model.safetensors"):
        export(empty, tmp_path / "out")
    result = subprocess.run(
        [sys.executable, "-m", "modeling_vitgpt2", "export", str(empty), str(tmp_path / "out")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1 and "missing" in result.stderr and "Traceback" not in result.stderr


def test_export_works_from_an_installed_wheel(short_run, tmp_path):
    """`pip install .` installs a wheel, not this checkout: the model card template must travel inside it."""
    from conftest import REPO

    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, REPO], check=True, timeout=300)
    wheel = next(wheels.glob("vitgpt2-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True, timeout=300)
    script = textwrap.dedent(
        """
        import sys
        site, checkpoint, out = sys.argv[1:]
        sys.path.insert(0, site)
        import modeling_vitgpt2
        assert modeling_vitgpt2.__file__.startswith(site), modeling_vitgpt2.__file__  # the wheel, not the repo
        from modeling_vitgpt2.cli import main
        sys.exit(main(["export", checkpoint, out]))
        """
    )
    out = tmp_path / "hub"
    result = subprocess.run(
        [sys.executable, "-c", script, str(site), str(short_run[0]), str(out)], cwd=tmp_path, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "library_name: transformers" in (out / "README.md").read_text()
