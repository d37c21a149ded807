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
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, prompt=None, generate_kwargs=None, **kwargs):
        forward_params = dict(generate_kwargs or {})
        forward_params.update(kwargs)
        return {"prompt": prompt}, forward_params, {}

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
        return self.processor(images=image, text=prompt, return_tensors="pt")

    def _forward(self, model_inputs, **generate_kwargs):
        # A batch of prompts arrives padded by the pipeline's collator; the model moves padding before the image.
        return {"generated_ids": self.model.generate(**model_inputs, **generate_kwargs)}

    def postprocess(self, model_outputs):
        return [{"generated_text": text} for text in self.processor.batch_decode(model_outputs["generated_ids"])]
