"""Caption metrics agree with the reference implementation, pycocoevalcap, to 1e-6."""

import shutil

import evaluate
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from modeling_vitgpt2.metrics.coco_caption import bleu, caption_scores, cider_d, ptb_tokenize, rouge_l

METRIC_PATH = "modeling_vitgpt2/metrics/coco_caption.py"

# Raw captions with several references each: punctuation, contractions, numbers, quotes, brackets, case.
PREDICTIONS = [
    "A man riding a wave on top of a surfboard.",
    "a dog that's sitting on a couch",
    "Two giraffes in a grassy field, next to trees",
    "a plate of food with broccoli",
    "The kitchen isn't clean; dishes everywhere!",
    "a red double-decker bus (in London)",
    "a man",
    "3 people playing frisbee, 1,000 feet away",
]
REFERENCES = [
    ["A surfer riding a big wave.", "a man on a surfboard riding a wave", "Man surfing in the ocean"],
    ["A dog is sitting on the couch.", "The dog's lying on a sofa", "a brown dog on a couch"],
    ["two giraffes in a grassy field", "A pair of giraffes stand near trees."],
    ["A plate with broccoli and rice.", "food on a white plate", "a dish of vegetables"],
    ["A dirty kitchen with dishes.", "the kitchen's sink is full of dishes", "a messy kitchen"],
    ['A "double-decker" bus on a street', "a red bus in the city", "Red bus (London)."],
    ["A man holding an umbrella.", "a person walking in the rain"],
    ["three people playing frisbee in a park", "people throw a frisbee; it's sunny"],
]


def reference_scores(gts, res):
    """pycocoevalcap's scorers on already tokenised captions."""
    bleus, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return bleus, rouge, cider


def test_scorers_match_pycocoevalcap_on_the_same_tokens():
    predictions = [ptb_tokenize(text) for text in PREDICTIONS]
    references = [[ptb_tokenize(text) for text in refs] for refs in REFERENCES]
    gts = {i: refs for i, refs in enumerate(references)}
    res = {i: [prediction] for i, prediction in enumerate(predictions)}
    bleus, rouge, cider = reference_scores(gts, res)
    assert bleu(predictions, references) == pytest.approx(bleus, abs=1e-6)
    assert rouge_l(predictions, references) == pytest.approx(rouge, abs=1e-6)
    assert cider_d(predictions, references) == pytest.approx(cider, abs=1e-6)
    assert cider > 0.1 and bleus[3] > 0.01  # the case is not degenerate


def test_perfect_predictions_score_high_and_exact_match_counts():
    references = [refs[:1] + refs for refs in REFERENCES]
    scores = caption_scores([refs[0] for refs in REFERENCES], references)
    assert scores["exact_match"] == 1.0 and scores["bleu4"] > 0.99 and scores["rougeL"] == pytest.approx(1.0)
    half = caption_scores([refs[0] if i % 2 else "nothing alike" for i, refs in enumerate(REFERENCES)], REFERENCES)
    assert half["exact_match"] == 0.5


@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's PTBTokenizer needs Java")
def test_end_to_end_matches_pycocoevalcap_with_its_java_tokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = PTBTokenizer().tokenize({i: [{"caption": c} for c in refs] for i, refs in enumerate(REFERENCES)})
    res = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(PREDICTIONS)})
    for i, refs in enumerate(REFERENCES):
        assert [ptb_tokenize(text) for text in refs] == gts[i]
        assert ptb_tokenize(PREDICTIONS[i]) == res[i][0]
    bleus, rouge, cider = reference_scores(gts, res)
    ours = caption_scores(PREDICTIONS, REFERENCES)
    assert [ours[f"bleu{k}"] for k in range(1, 5)] == pytest.approx(bleus, abs=1e-6)
    assert ours["rougeL"] == pytest.approx(rouge, abs=1e-6)
    assert ours["cider"] == pytest.approx(cider, abs=1e-6)


def test_loads_through_evaluate():
    metric = evaluate.load(METRIC_PATH)
    for prediction, refs in zip(PREDICTIONS[:4], REFERENCES[:4]):
        metric.add(prediction=prediction, references=refs)
    incremental = metric.compute()
    assert incremental == pytest.approx(caption_scores(PREDICTIONS[:4], REFERENCES[:4]))
    with pytest.raises(ValueError, match="reference"):
        caption_scores(["a"], [[]])
