"""COCO caption metrics — BLEU-1..4, ROUGE-L, CIDEr-D — computed as the COCO caption evaluation computes them
(pycocoevalcap), as an `evaluate` metric:

    metric = evaluate.load("modeling_vitgpt2/metrics/coco_caption.py")
    metric.compute(predictions=["a dog runs"], references=[["a dog is running", "the dog runs"]])

Inputs are tokenised like COCO's PTBTokenizer (lower-cased, contractions split, punctuation dropped) in pure Python,
so no Java is needed. CIDEr-D's document frequencies come from the references passed in one call, as in COCO: score
a whole evaluation set at once. `exact_match` is the share of predictions equal to one of their references after
tokenisation. This file is self-contained (standard library, numpy, datasets, evaluate).
"""

import math
import re
from collections import defaultdict

import datasets
import evaluate
import numpy as np

# Tokens COCO's evaluation drops after PTB tokenisation.
PUNCTUATIONS = {
    "''",
    "'",
    "``",
    "`",
    "-LRB-",
    "-RRB-",
    "-LCB-",
    "-RCB-",
    ".",
    "?",
    "!",
    ",",
    ":",
    "-",
    "--",
    "...",
    ";",
}
_CONTRACTION = re.compile(r"(?<=\w)(n't|'s|'m|'re|'ve|'ll|'d)\b")
# With -lowerCase, COCO's tokenizer emits "-lrb-" etc., which its (upper-case) punctuation list does not drop.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-", "[": "-lsb-", "]": "-rsb-"}
# Punctuation PTB splits off a word, except inside numbers (1,000 or 3.5) and abbreviations (u.s.).
_SPLIT = re.compile(r"""(\.\.\.|--|[?!;:"()\[\]{}]|,(?!\d)|(?<!\d),|\.(?=\s|$)|(?<=\s)'|^'|'(?=\s|$)|`)""")


def ptb_tokenize(text: str) -> str:
    """Lower-cased PTB-style tokens joined by single spaces, with COCO's punctuation removed."""
    text = text.replace("\n", " ").lower()
    text = _SPLIT.sub(r" \1 ", text)
    text = _CONTRACTION.sub(r" \1", text)
    tokens = []
    for token in text.split():
        token = _BRACKETS.get(token, token)
        if token == '"':
            continue  # PTB turns quotes into `` and '' , both dropped
        if token not in PUNCTUATIONS:
            tokens.append(token)
    return " ".join(tokens)


def _ngram_counts(words, n=4):
    counts = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def bleu(predictions, references, n=4):
    """Corpus BLEU-1..n with COCO's 'closest' reference length and its smoothing constants."""
    small, tiny = 1e-9, 1e-15
    guess, correct = [0] * n, [0] * n
    test_length = ref_length = 0
    for prediction, refs in zip(predictions, references):
        words = prediction.split()
        counts = _ngram_counts(words, n)
        max_ref_counts = {}
        for ref in refs:
            for ngram, count in _ngram_counts(ref.split(), n).items():
                max_ref_counts[ngram] = max(max_ref_counts.get(ngram, 0), count)
        ref_length += min((abs(len(ref.split()) - len(words)), len(ref.split())) for ref in refs)[1]
        test_length += len(words)
        for k in range(n):
            guess[k] += max(0, len(words) - k)
        for ngram, count in counts.items():
            correct[len(ngram) - 1] += min(max_ref_counts.get(ngram, 0), count)
    scores, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_length + tiny) / (ref_length + small)
    if ratio < 1:
        scores = [score * math.exp(1 - 1 / ratio) for score in scores]
    return scores


def _lcs_length(a, b):
    if len(a) < len(b):
        a, b = b, a
    lengths = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for j in range(1, len(b) + 1):
        for i in range(1, len(a) + 1):
            if a[i - 1] == b[j - 1]:
                lengths[i][j] = lengths[i - 1][j - 1] + 1
            else:
                lengths[i][j] = max(lengths[i - 1][j], lengths[i][j - 1])
    return lengths[len(a)][len(b)]


def rouge_l(predictions, references, beta=1.2):
    """Mean sentence ROUGE-L F-score (beta 1.2) with the best precision and best recall over references."""
    scores = []
    for prediction, refs in zip(predictions, references):
        candidate = prediction.split(" ")
        lcs = [_lcs_length(ref.split(" "), candidate) for ref in refs]
        precision = max(length / len(candidate) for length in lcs)
        recall = max(length / len(ref.split(" ")) for length, ref in zip(lcs, refs))
        if precision and recall:
            scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
        else:
            scores.append(0.0)
    return float(np.mean(np.array(scores)))


def cider_d(predictions, references, n=4, sigma=6.0):
    """CIDEr-D: tf-idf n-gram cosine with clipping and a Gaussian length penalty, document frequencies over the
    reference sets given, times 10, averaged over references and images."""
    cooked_refs = [[_ngram_counts(ref.split(), n) for ref in refs] for refs in references]
    document_frequency = defaultdict(float)
    for refs in cooked_refs:
        for ngram in {ngram for ref in refs for ngram in ref}:
            document_frequency[ngram] += 1
    log_images = np.log(float(len(cooked_refs)))

    def to_vector(counts):
        vector = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for ngram, term_frequency in counts.items():
            order = len(ngram) - 1
            vector[order][ngram] = float(term_frequency) * (log_images - np.log(max(1.0, document_frequency[ngram])))
            norm[order] += vector[order][ngram] ** 2
            if order == 1:  # COCO counts bigrams as the length; kept for parity
                length += term_frequency
        return vector, [np.sqrt(value) for value in norm], length

    scores = []
    for prediction, refs in zip(predictions, cooked_refs):
        vector, norm, length = to_vector(_ngram_counts(prediction.split(), n))
        total = np.zeros(n)
        for ref in refs:
            ref_vector, ref_norm, ref_length = to_vector(ref)
            penalty = np.e ** (-(float(length - ref_length) ** 2) / (2 * sigma**2))
            for order in range(n):
                value = sum(
                    min(weight, ref_vector[order][ngram]) * ref_vector[order][ngram]
                    for ngram, weight in vector[order].items()
                )
                if norm[order] != 0 and ref_norm[order] != 0:
                    value /= norm[order] * ref_norm[order]
                total[order] += value * penalty
        scores.append(np.mean(total) / len(refs) * 10.0)
    return float(np.mean(np.array(scores)))


def caption_scores(predictions, references) -> dict:
    """All metrics for raw (untokenised) predictions and lists of raw references."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every prediction needs at least one reference")
    predictions = [ptb_tokenize(text) for text in predictions]
    references = [[ptb_tokenize(text) for text in refs] for refs in references]
    bleus = bleu(predictions, references)
    return {
        **{f"bleu{k + 1}": bleus[k] for k in range(4)},
        "rougeL": rouge_l(predictions, references),
        "cider": cider_d(predictions, references),
        "exact_match": float(np.mean([prediction in refs for prediction, refs in zip(predictions, references)])),
    }


class CocoCaption(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Chen et al., Microsoft COCO Captions: Data Collection and Evaluation Server, 2015; "
            "Vedantam et al., CIDEr: Consensus-based Image Description Evaluation, CVPR 2015.",
            inputs_description="predictions: list of captions; references: list of lists of reference captions",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
            reference_urls=["https://github.com/tylin/coco-caption"],
        )

    def _compute(self, predictions, references):
        return caption_scores(predictions, references)
