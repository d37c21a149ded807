"""The fonts the built-in text lines are set in, from Debian's font packages. Training (and `validation`, `test`)
use TRAIN_FONTS: 92 faces of 48 families, serif (old-style, transitional, modern, slab), sans (grotesque, humanist,
geometric) and mono, light to bold, upright and italic. `test_unseen_fonts` uses UNSEEN_FONTS only: five URW
designs (Century Schoolbook, Palatino, Bookman, Avant Garde, Courier) of which training sees no face, nor any clone
(TeX Gyre, FreeMono, Courier Prime) of them, nor any other URW font.

Measured (README, Reading): with 11 DejaVu and Liberation faces and lines framed by the font's box, unseen faces
read at 41% CER, mostly because the reader had learned one size and height of letters in the frame; framing each
line by its x-height (segmentation_vitgpt2.frame_line) took that to 10%, and these 92 faces to 4.4%."""

import os
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
    # serif
    ("Liberation Serif Italic", "LiberationSerif-Italic.ttf", "fonts-liberation"),
    ("FreeSerif", "FreeSerif.ttf", "fonts-freefont-ttf"),
    ("FreeSerif Italic", "FreeSerifItalic.ttf", "fonts-freefont-ttf"),
    ("Linux Libertine", "LinLibertine_R.otf", "fonts-linuxlibertine"),
    ("Linux Libertine Italic", "LinLibertine_RI.otf", "fonts-linuxlibertine"),
    ("Linux Libertine Semibold", "LinLibertine_RZ.otf", "fonts-linuxlibertine"),
    ("EB Garamond", "EBGaramond12-Regular.otf", "fonts-ebgaramond"),
    ("EB Garamond Italic", "EBGaramond12-Italic.otf", "fonts-ebgaramond"),
    ("Gentium", "Gentium-R.ttf", "fonts-sil-gentium"),
    ("Gentium Italic", "Gentium-I.ttf", "fonts-sil-gentium"),
    ("Charis SIL", "CharisSIL-Regular.ttf", "fonts-sil-charis"),
    ("Charis SIL Bold", "CharisSIL-Bold.ttf", "fonts-sil-charis"),
    ("Charis SIL Italic", "CharisSIL-Italic.ttf", "fonts-sil-charis"),
    ("Caladea", "Caladea-Regular.ttf", "fonts-crosextra-caladea"),
    ("Caladea Bold", "Caladea-Bold.ttf", "fonts-crosextra-caladea"),
    ("STIX", "STIX-Regular.otf", "fonts-stix"),
    ("STIX Italic", "STIX-Italic.otf", "fonts-stix"),
    ("CMU Serif", "cmunrm.ttf", "fonts-cmu"),
    ("CMU Serif Italic", "cmunti.ttf", "fonts-cmu"),
    ("CMU Serif Bold", "cmunbx.ttf", "fonts-cmu"),
    ("Old Standard", "OldStandard-Regular.ttf", "fonts-oldstandard"),
    ("Old Standard Italic", "OldStandard-Italic.ttf", "fonts-oldstandard"),
    ("Roboto Slab", "RobotoSlab-Regular.otf", "fonts-roboto-slab"),
    ("Roboto Slab Light", "RobotoSlab-Light.otf", "fonts-roboto-slab"),
    ("Noto Serif", "NotoSerif-Regular.ttf", "fonts-noto-core"),
    ("Noto Serif Italic", "NotoSerif-Italic.ttf", "fonts-noto-core"),
    ("Noto Serif Bold", "NotoSerif-Bold.ttf", "fonts-noto-core"),
    ("Baskervald ADF", "BaskervaldADFStd.otf", "fonts-adf-baskervald"),
    ("Baskervald ADF Italic", "BaskervaldADFStd-Italic.otf", "fonts-adf-baskervald"),
    ("Accanthis ADF", "AccanthisADFStd-Regular.otf", "fonts-adf-accanthis"),
    # sans
    ("FreeSans", "FreeSans.ttf", "fonts-freefont-ttf"),
    ("FreeSans Oblique", "FreeSansOblique.ttf", "fonts-freefont-ttf"),
    ("FreeSans Bold", "FreeSansBold.ttf", "fonts-freefont-ttf"),
    ("Open Sans", "OpenSans-Regular.ttf", "fonts-open-sans"),
    ("Open Sans Light", "OpenSans-Light.ttf", "fonts-open-sans"),
    ("Open Sans Italic", "OpenSans-Italic.ttf", "fonts-open-sans"),
    ("Open Sans Bold", "OpenSans-Bold.ttf", "fonts-open-sans"),
    ("Roboto", "Roboto-Regular.ttf", "fonts-roboto-unhinted"),
    ("Roboto Light", "Roboto-Light.ttf", "fonts-roboto-unhinted"),
    ("Roboto Medium Italic", "Roboto-MediumItalic.ttf", "fonts-roboto-unhinted"),
    ("Roboto Condensed", "RobotoCondensed-Regular.ttf", "fonts-roboto-unhinted"),
    ("Lato", "Lato-Regular.ttf", "fonts-lato"),
    ("Lato Light", "Lato-Light.ttf", "fonts-lato"),
    ("Lato Bold Italic", "Lato-BoldItalic.ttf", "fonts-lato"),
    ("Cantarell", "Cantarell-Regular.otf", "fonts-cantarell"),
    ("Cantarell Light", "Cantarell-Light.otf", "fonts-cantarell"),
    ("Carlito", "Carlito-Regular.ttf", "fonts-crosextra-carlito"),
    ("Carlito Italic", "Carlito-Italic.ttf", "fonts-crosextra-carlito"),
    ("Inter", "Inter-Regular.otf", "fonts-inter"),
    ("Inter Light", "Inter-Light.otf", "fonts-inter"),
    ("Inter Semi Bold Italic", "Inter-SemiBoldItalic.otf", "fonts-inter"),
    ("Cabin", "Cabin-Regular.otf", "fonts-cabin"),
    ("Cabin Italic", "Cabin-Italic.otf", "fonts-cabin"),
    ("Quicksand", "Quicksand-Regular.ttf", "fonts-quicksand"),
    ("Quicksand Light", "Quicksand-Light.ttf", "fonts-quicksand"),
    ("Noto Sans", "NotoSans-Regular.ttf", "fonts-noto-core"),
    ("Noto Sans Italic", "NotoSans-Italic.ttf", "fonts-noto-core"),
    ("Linux Biolinum", "LinBiolinum_R.otf", "fonts-linuxlibertine"),
    ("Linux Biolinum Bold", "LinBiolinum_RB.otf", "fonts-linuxlibertine"),
    ("Gillius ADF", "GilliusADF-Regular.otf", "fonts-adf-gillius"),
    ("Universalis ADF", "UniversalisADFStd-Regular.otf", "fonts-adf-universalis"),
    ("Andika", "Andika-Regular.ttf", "fonts-sil-andika"),
    ("Go", "Go-Regular.ttf", "fonts-go"),
    ("Go Medium Italic", "Go-Medium-Italic.ttf", "fonts-go"),
    ("CMU Sans Serif", "cmunss.ttf", "fonts-cmu"),
    ("DejaVu Sans Condensed", "DejaVuSansCondensed.ttf", "fonts-dejavu-extra"),
    ("DejaVu Sans ExtraLight", "DejaVuSans-ExtraLight.ttf", "fonts-dejavu-extra"),
    # mono
    ("Inconsolata", "Inconsolata.otf", "fonts-inconsolata"),
    ("Go Mono", "Go-Mono.ttf", "fonts-go"),
    ("Anonymous Pro", "Anonymous Pro.ttf", "fonts-anonymous-pro"),
    ("Hack", "Hack-Regular.ttf", "fonts-hack"),
    ("JetBrains Mono", "JetBrainsMono-Regular.ttf", "fonts-jetbrains-mono"),
    ("JetBrains Mono Light", "JetBrainsMono-Light.ttf", "fonts-jetbrains-mono"),
    ("Fira Code Light", "FiraCode-Light.ttf", "fonts-firacode"),
    ("Noto Mono", "NotoMono-Regular.ttf", "fonts-noto-mono"),
    ("CMU Typewriter Text", "cmuntt.ttf", "fonts-cmu"),
    ("Latin Modern Mono Light", "lmmonolt10-regular.otf", "fonts-lmodern"),
    ("Latin Modern Mono", "lmmono10-regular.otf", "fonts-lmodern"),
    ("Linux Libertine Mono", "LinLibertine_M.otf", "fonts-linuxlibertine"),
    ("DejaVu Sans Mono Bold", "DejaVuSansMono-Bold.ttf", "fonts-dejavu-core"),
    ("Liberation Mono Bold", "LiberationMono-Bold.ttf", "fonts-liberation"),
)
UNSEEN_FONTS = (
    ("C059 Roman (Century Schoolbook)", "C059-Roman.otf", "fonts-urw-base35"),
    ("P052 Italic (Palatino)", "P052-Italic.otf", "fonts-urw-base35"),
    ("URW Bookman Light", "URWBookman-Light.otf", "fonts-urw-base35"),
    ("URW Gothic Book (Avant Garde)", "URWGothic-Book.otf", "fonts-urw-base35"),
    ("Nimbus Mono PS (Courier)", "NimbusMonoPS-Regular.otf", "fonts-urw-base35"),
)
# Where font files are looked for: VITGPT2_FONTS first (a folder of the files, for a machine that cannot install the
# Debian packages, e.g. copied there with the repository), then the usual system and user folders.
FONT_DIRS = (
    *([Path(os.environ["VITGPT2_FONTS"])] if os.environ.get("VITGPT2_FONTS") else []),
    Path("/usr/share/fonts"),
    Path("/usr/share/texmf/fonts"),  # Debian puts Latin Modern (fonts-lmodern) there
    Path("/usr/local/share/fonts"),
    Path.home() / ".local/share/fonts",
    Path.home() / ".fonts",
    Path("/Library/Fonts"),
    Path.home() / "Library/Fonts",
)
DEBIAN_PACKAGES = sorted({package for *_, package in TRAIN_FONTS + UNSEEN_FONTS})


# Words of a face's name that name its style, not its family ("Inter Semi Bold Italic" is a face of Inter).
STYLE_WORDS = frozenset({"Bold", "Italic", "Oblique", "Light", "ExtraLight", "Semibold", "Semi", "Medium"})


def families(fonts) -> list[str]:
    """The families of `fonts` ((name, file, package) triples), in order of first appearance."""
    return list(dict.fromkeys(" ".join(w for w in name.split() if w not in STYLE_WORDS) for name, _, _ in fonts))


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


def main(argv=None) -> None:
    import argparse
    import shutil

    parser = argparse.ArgumentParser(
        prog="python -m modeling_vitgpt2.data.reading.fonts",
        description="Print the Debian packages of every font builtin:text-lines draws in (for `apt-get install "
        "$(python -m modeling_vitgpt2.data.reading.fonts)`), or copy the installed font files into a folder that "
        "VITGPT2_FONTS can point to on a machine without those packages (32 MB).",
    )
    parser.add_argument("--copy", metavar="FOLDER", help="copy every font file into FOLDER instead")
    args = parser.parse_args(argv)
    if args.copy is None:
        print(*DEBIAN_PACKAGES)
        return
    Path(args.copy).mkdir(parents=True, exist_ok=True)
    for path in font_paths(TRAIN_FONTS + UNSEEN_FONTS):
        shutil.copy2(path, Path(args.copy) / Path(path).name)


if __name__ == "__main__":
    main()
