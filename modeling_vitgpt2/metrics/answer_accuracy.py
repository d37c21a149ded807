"""Answer accuracy for questions about images: the share of answers equal to a reference answer after the usual VQA
normalisation (lower case, punctuation and articles dropped, number words as digits), overall and per question type."""

import re
from collections import defaultdict

_ARTICLES = {"a", "an", "the"}
_NUMBERS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
            "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip


def normalise_answer(answer: str) -> str:
    words = re.sub(r"[^\w\s]", " ", answer.lower()).split()
    return " ".join(_NUMBERS.get(word, word) for word in words if word not in _ARTICLES)


def answer_accuracy(predictions, references, question_types=None) -> dict:
    """{"answer_accuracy": share right, "answer_accuracy_<type>": share right per type}; `references` holds a list
    of acceptable answers per question."""
    right = defaultdict(list)
    for index, (prediction, answers) in enumerate(zip(predictions, references)):
        correct = normalise_answer(prediction) in {normalise_answer(answer) for answer in answers}
        right["answer_accuracy"].append(correct)
        if question_types is not None:
            right[f"answer_accuracy_{question_types[index]}"].append(correct)
    return {name: sum(values) / len(values) for name, values in right.items()}
