"""What a Hub user runs: the saved folder loads in a process that cannot import this repo."""

import json
import textwrap

import torch
from conftest import CAPTIONS, ISOLATED_USER_PRELUDE, caption, distinct_images, run_isolated
from transformers import AutoModel, AutoProcessor

USER_SCRIPT = ISOLATED_USER_PRELUDE + textwrap.dedent(
    """
    ids = model.generate(**processor(images=images, return_tensors="pt"), max_new_tokens=40)
    captioner = pipeline("image-to-text", model=folder, trust_remote_code=True)
    print(json.dumps({
        "model": type(model).__module__,
        "generate": processor.batch_decode(ids, skip_special_tokens=True),
        "pipeline_paths": [out[0]["generated_text"] for out in captioner(paths, max_new_tokens=40, batch_size=3)],
        "pipeline_single": captioner(images[0], max_new_tokens=40),
        "pipeline_beams": [out[0]["generated_text"] for out in captioner(images, max_new_tokens=40, num_beams=3)],
    }))
    """
)


def test_saved_folder_loads_and_captions_without_this_repo(trained_dir, processor, tmp_path):
    images = distinct_images(8)
    paths = []
    for index, image in enumerate(images):
        paths.append(str(tmp_path / f"image{index}.png"))
        image.save(paths[-1])
    script = tmp_path / "user.py"
    script.write_text(USER_SCRIPT)

    result = run_isolated([str(script), str(trained_dir), *paths], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])

    assert got["model"].startswith("transformers_modules."), "the model came from somewhere else than the folder"
    model = AutoModel.from_pretrained(trained_dir, trust_remote_code=True)
    here = caption(model, AutoProcessor.from_pretrained(trained_dir, trust_remote_code=True), images)
    assert here == CAPTIONS
    assert got["generate"] == here
    assert got["pipeline_paths"] == here
    assert got["pipeline_single"] == [{"generated_text": here[0]}]
    assert got["pipeline_beams"] == here


def test_pipeline_accepts_a_datasets_column_and_generate_kwargs(trained_dir):
    import datasets
    from transformers import pipeline

    images = distinct_images(4)
    column = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    captioner = pipeline("image-to-text", model=str(trained_dir), trust_remote_code=True)
    outputs = captioner(column["image"], batch_size=2)
    assert [out[0]["generated_text"] for out in outputs] == CAPTIONS[:4]
    short = captioner(images[0], max_new_tokens=2)[0]["generated_text"]
    assert CAPTIONS[0].startswith(short) and len(short) < len(CAPTIONS[0])
    with torch.no_grad():
        sampled = captioner(images[0], do_sample=True, max_new_tokens=40)
    assert isinstance(sampled[0]["generated_text"], str)
