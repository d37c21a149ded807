"""The fonts the built-in text lines are set in, from Debian's font packages. Training (and `validation`, `test`)
use TRAIN_FONTS: 11 faces of the DejaVu and Liberation families (serif, sans, mono; regular, bold, italic).
`test_unseen_fonts` uses UNSEEN_FONTS only: five URW designs (Century Schoolbook, Palatino, Bookman, Avant Garde,
Courier) of which training sees no face, nor any clone (TeX Gyre, FreeMono) of them.

Measured: 30 training faces of 24 families (adding FreeSerif, Open Sans, Roboto, Linux Libertine, EB Garamond, Go,
Gentium, Comic Neue, ...) with letter spacing, width, slant and stroke-weight variations read the unseen faces no
better (38% CER against 42%) and the seen ones worse, in the job's 40,000 lines: see README, Reading."""

from pathlib import Path

# (family and style, file name, Debian package)
TRAIN_FONTS = (
    ("DejaVu Sans", "DejaVuSans.ttf", "fonts-dejavu-core"),
    ("DejaVu Sans Bold", "DejaVuSans-Bold.ttf", "fonts-dejavu-core"),
    ("DejaVu Serif", "DejaVuSerif.ttf", "fonts-dejavu-core"),
    ("DejaVu Serif Italic", "DejaVuSerif-Italic.ttf", "fonts-dejavu-extra"),
    ("DejaVu Sans Mono", "DejaVuSansMono.ttf", "fonts-dejavu-core"),
    ("Liberation Sans", "LiberationSans-Regular.ttf", "fonts-liberation"),
    ("Liberation Sans Italic", "LiberationSans-Italic.ttf", "fonts-liberation"),
    ("Liberation Sans Narrow", "LiberationSansNarrow-Regular.ttf", "fonts-liberation"),
    ("Liberation Serif", "LiberationSerif-Regular.ttf", "fonts-liberation"),
    ("Liberation Serif Bold", "LiberationSerif-Bold.ttf", "fonts-liberation"),
    ("Liberation Mono", "LiberationMono-Regular.ttf", "fonts-liberation"),
)
UNSEEN_FONTS = (
    ("C059 Roman (Century Schoolbook)", "C059-Roman.otf", "fonts-urw-base35"),
    ("P052 Italic (Palatino)", "P052-Italic.otf", "fonts-urw-base35"),
    ("URW Bookman Light", "URWBookman-Light.otf", "fonts-urw-base35"),
    ("URW Gothic Book (Avant Garde)", "URWGothic-Book.otf", "fonts-urw-base35"),
    ("Nimbus Mono PS (Courier)", "NimbusMonoPS-Regular.otf", "fonts-urw-base35"),
)
FONT_DIRS = (
    Path("/usr/share/fonts"),
    Path("/usr/local/share/fonts"),
    Path.home() / ".local/share/fonts",
    Path.home() / ".fonts",
    Path("/Library/Fonts"),
    Path.home() / "Library/Fonts",
)
DEBIAN_PACKAGES = sorted({package for *_, package in TRAIN_FONTS + UNSEEN_FONTS})


class FontError(RuntimeError):
    """A font the built-in text lines need is not installed."""


def _installed() -> dict[str, str]:
    """Font file name -> path, for every file in the usual font folders."""
    found = {}
    for folder in FONT_DIRS:
        if folder.is_dir():
            for path in folder.rglob("*"):
                found.setdefault(path.name, str(path))
    return found


def missing_packages() -> list[str]:
    """The Debian packages that would bring the fonts not installed here."""
    found = _installed()
    return sorted({package for _, file, package in TRAIN_FONTS + UNSEEN_FONTS if file not in found})


def font_paths(fonts) -> list[str]:
    """The files of `fonts`, in order; FontError names every missing one and the package that brings it."""
    found = _installed()
    missing = [f"{name} ({file}, Debian package {package})" for name, file, package in fonts if file not in found]
    if missing:
        raise FontError(
            "fonts not installed: " + "; ".join(missing)
            + f". On Debian/Ubuntu: apt-get install {' '.join(DEBIAN_PACKAGES)}"
        )  # fmt: skip
    return [found[file] for _, file, _ in fonts]
