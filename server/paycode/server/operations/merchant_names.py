"""A merchant's name and city in its own script, and the printable ASCII that EMV tags 59 and 60
require beside it (docs/spec.md, section 12; the language template 64 carries the original).

The operator may give the ASCII forms (`merchants create --ascii-name --ascii-city`); when they
do not, we transliterate: Chinese (language ZH) with pypinyin, as Hanyu Pinyin without tone
marks, words capitalised ("北京烤鸭店" -> "Beijing Kaoya Dian"); anything else with anyascii
("Café Müller" -> "Cafe Muller", "Москва" -> "Moskva"). Word breaks in Chinese are a guess:
pypinyin's phrase list where it knows the word, otherwise pairs of characters (most Chinese words
have two); a city is one word ("石家庄" -> "Shijiazhuang"). Results are cut to EMV's 25 (name)
and 15 (city) characters, at a word's end where a space allows. The language (64/00) is
inferred from the script where the script says it (Han ZH, kana JA, Hangul KO, Thai TH, Greek
EL, Hebrew HE); otherwise the operator names it.
"""

from __future__ import annotations

import re
from typing import Final

from anyascii import anyascii

EMV_NAME_CHARS_MAX: Final = 25
"""Tag 59 (ASCII) and tag 64/01 (the name in its own script)."""
EMV_CITY_CHARS_MAX: Final = 15
"""Tag 60 (ASCII) and tag 64/02."""
CHINESE: Final = "ZH"

_HAN_RANGES: Final = (
    "\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef\U00030000-\U0003134f"
)
_HAN_RUN: Final = re.compile(f"([{_HAN_RANGES}]+)")
_SCRIPTS: Final = (
    # Kana first: Japanese writes Han characters too, Chinese never writes kana.
    ("JA", re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")),
    ("KO", re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")),
    (CHINESE, re.compile(f"[{_HAN_RANGES}]")),
    ("TH", re.compile("[\u0e00-\u0e7f]")),
    ("EL", re.compile("[\u0370-\u03ff\u1f00-\u1fff]")),
    ("HE", re.compile("[\u0590-\u05ff]")),
)
INFERRED_SCRIPTS: Final = "Han (ZH), kana (JA), Hangul (KO), Thai (TH), Greek (EL), Hebrew (HE)"
_PINYIN_VOWEL_START: Final = ("a", "o", "e")
_OPENERS: Final = "([{"


def is_ascii_text(text: str) -> bool:
    """What EMV tags 59 and 60 may hold: printable ASCII."""
    return text.isascii() and text.isprintable()


def infer_language(*texts: str) -> str | None:
    """ISO 639-1 (capitals) of the first script in `texts` that names one language; None when
    none does (Latin with accents, Cyrillic, Arabic ... are written in many)."""
    for text in texts:
        for language, script in _SCRIPTS:
            if script.search(text):
                return language
    return None


def transliterate(text: str, language: str, chars_max: int, *, city: bool = False) -> str:
    """`text` in printable ASCII, at most `chars_max` characters (cut at a word's end where
    it can be); "" when nothing of it could be written in ASCII. Chinese goes through pypinyin,
    everything else through anyascii."""
    chinese = language.upper() == CHINESE
    ascii_text = _pinyin(text, city=city) if chinese else anyascii(text)
    printable = "".join(char for char in ascii_text if char.isprintable())
    return _cut(" ".join(printable.split()), chars_max)


def _cut(text: str, chars_max: int) -> str:
    """At most `chars_max` characters, ending at a word's end when a space allows it."""
    if len(text) <= chars_max:
        return text
    cut = text[:chars_max]
    if not text[chars_max].isspace() and " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" " + _OPENERS)


def _pinyin(text: str, *, city: bool) -> str:
    out = ""
    for index, run in enumerate(_HAN_RUN.split(text)):
        if not run:
            continue
        if index % 2 == 0:  # not Han: punctuation, digits, Latin, kana ...
            out = _append(out, anyascii(run))
            continue
        words = [run] if city else _chinese_words(run)
        for word in words:
            out = _append(out, _pinyin_word(word))
    return out


def _chinese_words(run: str) -> list[str]:
    """Words of a run of Han characters: pypinyin's phrases, the rest in pairs."""
    # Deferred: pypinyin loads its dictionaries on import (0.4 s, 60 MB), for Chinese names only.
    from pypinyin.seg.mmseg import seg  # noqa: PLC0415

    words: list[str] = []
    singles = ""
    for piece in seg.cut(run):
        if len(piece) == 1:
            singles += piece
            continue
        words += _pairs(singles)
        singles = ""
        words.append(piece)
    return words + _pairs(singles)


def _pairs(chars: str) -> list[str]:
    return [chars[start : start + 2] for start in range(0, len(chars), 2)]


def _pinyin_word(word: str) -> str:
    """One word: syllables joined, the first capitalised, an apostrophe before a syllable that
    starts with a, o or e ("西安" -> "Xi'an"), ü written u."""
    from pypinyin import Style, lazy_pinyin  # noqa: PLC0415 - as above

    syllables = [
        anyascii(syllable) for syllable in lazy_pinyin(word, style=Style.NORMAL, v_to_u=True)
    ]
    joined = syllables[0]
    for syllable in syllables[1:]:
        apostrophe = "'" if syllable.startswith(_PINYIN_VOWEL_START) else ""
        joined += apostrophe + syllable
    return joined[:1].upper() + joined[1:]


def _append(out: str, piece: str) -> str:
    """Words apart by one space; punctuation hugs its word, an opening bracket does not."""
    word = piece.strip()
    if not word:
        return out + " " if out else out
    spaced = piece[0].isspace() or (
        out[-1:].isalnum() and (word[0].isalnum() or word[0] in _OPENERS)
    )
    return out + (" " if out and spaced else "") + word
