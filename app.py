"""Demo page: caption an uploaded image, or ask a question about it. Ready for a Hugging Face Space (set
VITGPT2_MODEL to a Hub id), or local:

python app.py --model runs/default            # then open http://127.0.0.1:7860
"""

import argparse
import json
import os
from pathlib import Path

import gradio as gr
from transformers import pipeline

DEFAULT_MODEL = os.environ.get("VITGPT2_MODEL", "runs/default")


def examples_of(model: str) -> list[tuple[str, str]]:
    """The test scenes a trained or exported model carries in examples/ (train.py and export write them), as (image
    path, prompt) to click on the page: "" to caption, a question where the model was trained on questions; none if
    the model has none or the Hub cannot be reached."""
    folder = Path(model)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model, allow_patterns=["examples/*"]))
        except Exception:  # offline, private or missing repo: the page works without examples
            return []
    listed = folder / "examples" / "examples.json"
    if not listed.is_file():
        return []
    return [(str(folder / example["file"]), example.get("prompt", "")) for example in json.loads(listed.read_text())]


def shown_question(prompt: str) -> str:
    """The question of a `Question: ... Answer:` prompt (the form vitgpt2's questions are trained in), for a label."""
    return prompt.removeprefix("Question:").removesuffix("Answer:").strip()


def build_demo(model: str) -> gr.Blocks:
    captioner = pipeline("image-to-text", model=model, trust_remote_code=True)

    def caption(path, prompt, num_beams, max_new_tokens):
        if not path:
            return None, "Upload an image first."
        try:
            output = captioner(path, prompt=prompt, num_beams=int(num_beams), max_new_tokens=int(max_new_tokens))
        except ValueError as error:  # the processor names what it could not read
            name = os.path.basename(path)
            return None, f"Could not read {name} as an image: {str(error).split(': ', 1)[-1]}"
        return path, output[0]["generated_text"]

    with gr.Blocks(title="vitgpt2 image captioning") as demo:
        gr.Markdown(f"# vitgpt2 image captioning\nCLIP/ViT → MLP → GPT-2. Model: `{model}`")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Image", file_count="single", type="filepath", elem_id="upload")
                prompt = gr.Textbox(
                    label="Prompt (optional)", placeholder="Question: what colour is the square? Answer:",
                    elem_id="prompt",
                )  # fmt: skip
                num_beams = gr.Slider(1, 8, value=1, step=1, label="Beam size (1 = greedy)")
                max_new_tokens = gr.Slider(4, 64, value=32, step=1, label="Maximum length (tokens)")
                button = gr.Button("Caption", variant="primary", elem_id="caption-button")
            with gr.Column():
                preview = gr.Image(label="Your image", type="filepath", interactive=False)
                result = gr.Textbox(label="Caption or answer", elem_id="caption", interactive=False)
        button.click(caption, [upload, prompt, num_beams, max_new_tokens], [preview, result])
        examples = examples_of(model)
        if examples:
            gr.Examples(
                examples=[list(example) for example in examples],
                inputs=[upload, prompt],
                label="Or click a test scene (with a question, where it has one)",
                elem_id="examples",
                example_labels=[
                    f"scene {number + 1}" + (f": {shown_question(prompt)}" if prompt else "")
                    for number, (_, prompt) in enumerate(examples)
                ],
                cache_examples=False,
            )
    return demo


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model folder or Hub id (default: $VITGPT2_MODEL)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")
    args = parser.parse_args()
    build_demo(args.model).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
