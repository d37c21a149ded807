"""Prompted generation: questions and task prompts after the image, the target in labels only, and transformers'
conventions for a vision-language model (resize_token_embeddings, get_image_features, position_ids, clear errors)."""

import tempfile

import pytest
import torch
from conftest import (
    CAPTIONS,
    CONVNEXT_PATCHES,
    ISOLATED,
    distinct_images,
    tiny_model,
    train_on_pairs,
    without_dropout,
)
from transformers import AutoModel, AutoProcessor, pipeline
from transformers.modeling_outputs import BaseModelOutputWithPooling

from modeling_vitgpt2 import VitGpt2ForCaptioning
from modeling_vitgpt2.data.collator import CaptionCollator

PROMPTS = ["a red", "two small blue squares", "", "three purple hearts in"]  # different lengths, one empty


@pytest.fixture(scope="module")
def images():
    return distinct_images(4)


@pytest.mark.parametrize("variant", [{}, {"prefix_length": 2}, {"vision_feature": "patch"}, ISOLATED])
@pytest.mark.parametrize("search", [{}, {"cache_implementation": "dynamic"}, {"num_beams": 3}])
def test_a_batch_of_prompts_answers_as_one_prompt_at_a_time(tokenizer, processor, images, variant, search):
    model = tiny_model(tokenizer, seed=3, **variant)
    settings = dict(max_new_tokens=8, min_new_tokens=8, **search)
    batched = model.generate(**processor(images=images, text=PROMPTS), **settings)
    for row, (image, prompt) in enumerate(zip(images, PROMPTS)):
        alone = model.generate(**processor(images=image, text=prompt), **settings)
        assert torch.equal(alone[0], batched[row]), (row, prompt)


def test_fast_greedy_takes_prompts_with_transformers_tokens(tokenizer, processor, images):
    model = tiny_model(tokenizer, seed=4, vision_feature="patch")
    for prompts in (PROMPTS, ["a red circle"] * 4):  # padded and unpadded batches
        inputs = processor(images=images, text=prompts)
        fast = model.generate(**inputs, max_new_tokens=9, min_new_tokens=3)
        loop = model.generate(**inputs, max_new_tokens=9, min_new_tokens=3, cache_implementation="dynamic")
        assert torch.equal(fast, loop)


def test_sampling_takes_prompts(tokenizer, processor, images):
    model = tiny_model(tokenizer, seed=3)
    inputs = processor(images=images, text=PROMPTS)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(model.generate(**inputs, do_sample=True, top_k=0, temperature=3.0, max_new_tokens=6))
    assert torch.equal(*runs)
    assert not torch.equal(runs[0], model.generate(**inputs, max_new_tokens=6, min_new_tokens=6)[:, : runs[0].shape[1]])


def test_the_prompt_changes_the_answer_and_is_not_returned(tokenizer, processor, images):
    model = tiny_model(tokenizer, seed=3)
    image = images[:1]
    caption = model.generate(**processor(images=image), max_new_tokens=6, min_new_tokens=6)
    answer = model.generate(
        **processor(images=image, text="two small blue squares"), max_new_tokens=6, min_new_tokens=6
    )
    assert answer.shape == (1, 6)  # new tokens only
    assert not torch.equal(caption, answer)
    empty = model.generate(**processor(images=image, text=""), max_new_tokens=6, min_new_tokens=6)
    assert torch.equal(caption, empty)  # an empty prompt means "caption"


def test_loss_covers_the_target_only(tokenizer, processor, images):
    model = without_dropout(tiny_model(tokenizer, seed=2))
    batch = processor(images=images[:2], text=["a red", "two small blue"], text_target=["circle", "squares x y"])
    output = model(**batch)
    # By hand: the logits just before each target token predict it; nothing else is scored.
    losses = []
    for row in range(2):
        labels = batch["labels"][row][batch["labels"][row] != -100]
        start = output.logits.shape[1] - batch["labels"].shape[1] - 1  # the target comes last; padding goes first
        logits = output.logits[row, start : start + len(labels)]
        losses.append(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
    manual = sum(losses) / int((batch["labels"] != -100).sum())
    torch.testing.assert_close(output.loss, manual)
    # The same target after another prompt is another loss: the prompt is read, not scored.
    other = processor(images=images[:2], text=["three purple", "a green"], text_target=["circle", "squares x y"])
    assert not torch.allclose(model(**other).loss, output.loss)


def test_a_tiny_model_learns_to_answer_from_image_and_prompt(tokenizer, processor):
    """Two questions per image, with different answers: only a model that reads both can get all 8 right."""
    images = distinct_images(4)
    questions = ["what is it?", "how many?"]
    pairs = [(image, question, CAPTIONS[2 * index + q]) for index, image in enumerate(images)
             for q, question in enumerate(questions)]  # fmt: skip

    # Each image is asked both questions: a model that ignored the prompt could not get all eight right.
    images, prompts, answers = (list(column) for column in zip(*pairs))
    model = train_on_pairs(tiny_model(tokenizer, seed=5), processor, images, answers, steps=400, prompts=prompts)
    assert (
        processor.batch_decode(model.generate(**processor(images=images, text=prompts), max_new_tokens=40)) == answers
    )


def test_generation_never_reads_the_target(tokenizer, processor, images):
    model = tiny_model(tokenizer, seed=6)
    prompts = ["a red", "two small blue squares"]
    right = processor(images=images[:2], text=prompts, text_target=CAPTIONS[:2])
    wrong = processor(images=images[:2], text=prompts, text_target=CAPTIONS[5:7])
    wrong["target_input_ids"] = wrong["labels"].clamp(min=0)
    assert torch.equal(model.generate(**right, max_new_tokens=8), model.generate(**wrong, max_new_tokens=8))


def test_inputs_embeds_prompt_equals_input_ids(tokenizer, processor, images):
    model = tiny_model(tokenizer, seed=3)
    inputs = processor(images=images, text=PROMPTS)
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    by_ids = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5)
    by_embeds = model.generate(
        pixel_values=inputs["pixel_values"], inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
        max_new_tokens=5, min_new_tokens=5,
    )  # fmt: skip
    assert torch.equal(by_ids, by_embeds)
    with torch.no_grad():
        torch.testing.assert_close(
            model(**inputs).logits,
            model(
                pixel_values=inputs["pixel_values"], inputs_embeds=embeds, attention_mask=inputs["attention_mask"]
            ).logits,
        )


def test_forward_takes_position_ids(tokenizer, processor, images):
    model = tiny_model(tokenizer, seed=3)
    batch = processor(images=images[:1], text="two small", text_target=CAPTIONS[:1])
    with torch.no_grad():
        default = model(**batch).logits
        positions = torch.arange(default.shape[1])[None]
        same = model(**batch, position_ids=positions).logits
        shifted = model(**batch, position_ids=positions + 3).logits
    torch.testing.assert_close(default, same)
    assert not torch.allclose(default, shifted)


def test_clear_errors_for_what_generate_cannot_honour(tokenizer, processor, images):
    model = tiny_model(tokenizer, seed=3)
    inputs = processor(images=images[:1], text="a red")
    with pytest.raises(ValueError, match="past_key_values"):
        model.generate(**inputs, past_key_values=object())
    with pytest.raises(ValueError, match="needs the image"):
        model.generate(input_ids=inputs["input_ids"])
    with pytest.raises(ValueError, match="not both"):
        model.generate(**inputs, inputs_embeds=model.get_input_embeddings()(inputs["input_ids"]))
    room = model.config.text_config.n_positions - model.get_image_prefix(inputs["pixel_values"]).shape[1]
    too_long = torch.ones(1, room, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"prompt of {room} tokens is too long.*at most {room - 1}"):
        model.generate(pixel_values=inputs["pixel_values"], input_ids=too_long)
    with pytest.raises(ValueError, match="too long"):
        model(pixel_values=inputs["pixel_values"], input_ids=too_long)
    longest = model.generate(pixel_values=inputs["pixel_values"], input_ids=too_long[:, 1:], max_new_tokens=50)
    assert longest.shape[1] == 1  # the positions left: one


def test_get_image_features_returns_what_transformers_vlms_return(tokenizer, processor, images):
    model = tiny_model(tokenizer, seed=3, vision_feature="patch")
    pixel_values = processor(images=images[:2])["pixel_values"]
    output = model.get_image_features(pixel_values, output_hidden_states=True)
    assert isinstance(output, BaseModelOutputWithPooling)
    prefix = model.get_image_prefix(pixel_values)
    torch.testing.assert_close(output.pooler_output, prefix)
    assert prefix.shape == (2, (32 // 8) ** 2, model.config.text_config.n_embd)
    assert output.last_hidden_state.shape[0] == 2 and output.hidden_states is not None


@pytest.mark.parametrize("tied", [True, False])
def test_resize_token_embeddings(tokenizer, processor, images, tied, tmp_path):
    config = tiny_model(tokenizer).config
    config.tie_word_embeddings = config.text_config.tie_word_embeddings = tied
    torch.manual_seed(3)
    model = VitGpt2ForCaptioning(config).eval()
    old = model.config.text_config.vocab_size
    batch = processor(images=images[:2], text_target=CAPTIONS[:2])
    with torch.no_grad():
        before = model(**batch).logits
    model.resize_token_embeddings(old + 5)
    assert model.config.text_config.vocab_size == old + 5
    assert model.get_input_embeddings().weight.shape[0] == old + 5
    assert model.get_output_embeddings().weight.shape[0] == old + 5
    lm = model.language_model
    assert (lm.lm_head.weight.data_ptr() == lm.transformer.wte.weight.data_ptr()) == tied
    with torch.no_grad():
        after = model(**batch).logits
    torch.testing.assert_close(after[..., :old], before)
    model.save_pretrained(tmp_path)
    again = VitGpt2ForCaptioning.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, after)
    new_token = torch.tensor([[old + 4]])
    assert model.generate(pixel_values=batch["pixel_values"][:1], input_ids=new_token, max_new_tokens=2).shape == (1, 2)


def test_pipeline_and_auto_classes_take_a_prompt(tokenizer, processor, images):
    """A tiny model trained on (image, prompt) -> answer, saved, and used as users would."""
    questions = ["what is it?"] * 4
    model = train_on_pairs(tiny_model(tokenizer, seed=5), processor, images, CAPTIONS[:4], steps=400, prompts=questions)
    folder = tempfile.mkdtemp()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)

    loaded = AutoModel.from_pretrained(folder, trust_remote_code=True)
    loaded_processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = loaded_processor(images=images, text=questions, return_tensors="pt")
    assert loaded_processor.batch_decode(loaded.generate(**inputs)) == CAPTIONS[:4]

    answerer = pipeline("image-to-text", model=folder, trust_remote_code=True)
    assert answerer(images[1], prompt=questions[0]) == [{"generated_text": CAPTIONS[1]}]
    assert [out[0]["generated_text"] for out in answerer(images, prompt=questions[0], batch_size=3)] == CAPTIONS[:4]
    captioned = answerer(images[1])[0]["generated_text"]  # no prompt: the model captions, as before
    direct = processor.batch_decode(model.generate(**processor(images=images[1:2])))[0]
    assert captioned == direct


def test_processor_pads_prompts_left_and_targets_right(processor):
    batch = processor(text=["a red", "two small blue squares"], text_target=["circle", "a green triangle above"])
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1  # left-padded prompt
    assert batch["labels"][0, -1] == -100 and batch["labels"][0, 0] != -100  # right-padded target
    eos = processor.tokenizer.eos_token_id
    assert (batch["labels"] == eos).sum() == 2  # every target ends with EOS; prompts do not
    assert not (batch["input_ids"][batch["attention_mask"] == 1] == eos).any()
    assert "input_ids" not in processor(text=["", None])  # no prompt at all: caption
    with pytest.raises(ValueError, match="target 1"):
        processor(text_target=["a caption", "  "])


@pytest.mark.parametrize("variant", [{}, {"prefix_length": 2}, CONVNEXT_PATCHES, ISOLATED])
def test_packed_tasks_train_as_separate_rows(tokenizer, processor, images, variant):
    """An image's caption and questions packed after one reading of the image: the same loss and gradients as the
    same tasks trained as separate rows, each after its own copy of the image."""
    model = without_dropout(tiny_model(tokenizer, seed=9, **variant))
    examples = [
        {"image": images[0], "prompt": ["", "a red", "two small blue squares"], "captions": CAPTIONS[:3]},
        {"image": images[1], "prompt": ["three purple", ""], "captions": CAPTIONS[3:5]},  # the caption goes first
        {"image": images[2], "prompt": ["an orange"], "captions": CAPTIONS[5:6]},  # no caption; slots left unused
    ]
    collator = CaptionCollator(processor, 32, tasks_per_image=3)
    packed = collator(examples)
    assert packed["labels"].shape[:2] == (3, 3) and packed["input_ids"].shape[:2] == (3, 3)
    separate = []  # (pixel row, prompt ids, prompt mask, labels) of each task the collator drew
    for image, tasks in enumerate(zip(packed["input_ids"], packed["attention_mask"], packed["labels"])):
        drawn = [task for task in zip(*tasks) if (task[2] != -100).any()]
        targets = [processor.decode(labels[labels != -100]) for _, _, labels in drawn]
        assert sorted(targets) == sorted(examples[image]["captions"])  # every task once
        prompts = examples[image]["prompt"]
        if "" in prompts:  # the caption goes first
            assert targets[0] == examples[image]["captions"][prompts.index("")]
        separate += [(image, ids[None], mask[None], labels[None]) for ids, mask, labels in drawn]

    loss = model(
        pixel_values=packed["pixel_values"], **{k: packed[k] for k in ("input_ids", "attention_mask", "labels")}
    ).loss
    loss.backward()
    packed_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    tokens = sum(int((labels != -100).sum()) for *_, labels in separate)
    total = 0
    for image, ids, mask, labels in separate:
        row = model(pixel_values=packed["pixel_values"][image : image + 1], input_ids=ids, attention_mask=mask,
                    labels=labels)  # fmt: skip
        row_tokens = int((labels != -100).sum())
        (row.loss * row_tokens / tokens).backward()
        total += row.loss.detach() * row_tokens / tokens
    torch.testing.assert_close(loss.detach(), total)
    separate_grads = [p.grad for p in model.parameters() if p.grad is not None]
    for packed_grad, separate_grad in zip(packed_grads, separate_grads, strict=True):
        torch.testing.assert_close(packed_grad, separate_grad, atol=1e-6, rtol=1e-4)


def test_packed_tasks_refuse_a_second_caption(tokenizer, processor, images):
    model = tiny_model(tokenizer, seed=9)
    targets = processor.tokenize_targets(CAPTIONS[:2])["labels"][None]  # one image, two tasks, neither prompted
    pixel_values = processor(images=images[:1])["pixel_values"]
    with pytest.raises(ValueError, match="only an image's first task may go without a prompt"):
        model(pixel_values=pixel_values, labels=targets)
    with pytest.raises(ValueError, match="for training"):
        model(pixel_values=pixel_values, input_ids=torch.ones(1, 2, 3, dtype=torch.long))
