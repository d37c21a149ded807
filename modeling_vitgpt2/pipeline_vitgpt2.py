"""`pipeline("image-to-text", model=..., trust_remote_code=True)` — transformers 5 no longer ships that task."""

from collections.abc import Iterable, Sized

from PIL import Image
from transformers import Pipeline

TASK = "image-to-text"


class VitGpt2CaptioningPipeline(Pipeline):
    """Captions images, or answers a prompt about them: a PIL image, a path, a URL, or a list / `datasets` column.

    `prompt="Question: what colour is the square? Answer:"` asks the same of every image; without it (or with "")
    the model captions. Generation kwargs (`max_new_tokens`, `num_beams`, `do_sample`, ...) pass straight to
    `model.generate`. Returns `[{"generated_text": text}]` per image: the new text only, never the prompt.

    A reader (a model that reads text lines) takes a line or a whole page: a page is cut into its lines, which are
    read in batches of `line_batch_size` and joined top to bottom with line breaks; an image without ink reads "".
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, prompt=None, generate_kwargs=None, line_batch_size=None, **kwargs):
        forward_params = dict(generate_kwargs or {})
        forward_params.update(kwargs)
        if line_batch_size is not None:
            forward_params["line_batch_size"] = line_batch_size
        return {"prompt": prompt}, forward_params, {}

    @property
    def reads_lines(self) -> bool:
        return getattr(self.model.config, "vision_feature", None) == "columns"

    def __call__(self, inputs, **kwargs):
        # A `datasets` column (or any sized iterable of images) is captioned like a list.
        if (
            isinstance(inputs, Iterable)
            and isinstance(inputs, Sized)
            and not isinstance(inputs, (str, bytes, list, tuple, dict, Image.Image))
            and not hasattr(inputs, "shape")
        ):
            inputs = list(inputs)
        return super().__call__(inputs, **kwargs)

    def preprocess(self, image, prompt=None):
        # The processor reads paths and URLs itself (and names any input it cannot read). No import of the
        # processing module here: transformers 4.x copies only the modeling file's direct imports.
        if self.reads_lines:
            return {"lines": self.processor.split_page(image), "prompt": prompt}
        return self.processor(images=image, text=prompt, return_tensors="pt")

    def _forward(self, model_inputs, line_batch_size: int = 32, **generate_kwargs):
        if "lines" in model_inputs:
            lines, prompt, texts = model_inputs["lines"], model_inputs["prompt"], []
            for start in range(0, len(lines), line_batch_size):
                batch = lines[start : start + line_batch_size]
                inputs = self.processor(images=batch, text=[prompt] * len(batch) if prompt else None)
                texts += self.processor.batch_decode(self.model.generate(**inputs, **generate_kwargs))
            return {"text": "\n".join(texts)}
        # A batch of prompts arrives padded by the pipeline's collator; the model moves padding before the image.
        return {"generated_ids": self.model.generate(**model_inputs, **generate_kwargs)}

    def postprocess(self, model_outputs):
        if "text" in model_outputs:
            return [{"generated_text": model_outputs["text"]}]
        return [{"generated_text": text} for text in self.processor.batch_decode(model_outputs["generated_ids"])]
