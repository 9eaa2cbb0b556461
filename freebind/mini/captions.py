"""Captions of events: the class always, plus a varying subset of attributes, with
paraphrases (synonyms, word order, sentence forms).

A caption is built in two steps so that controlled variants are easy to make:
:func:`caption_spec` draws every *wording* choice (form, word orders, synonym indices) for a
set of mentioned attributes, and :func:`render_caption` turns (event, spec) into text. The
same spec with other acoustic values gives captions that differ only in acoustic words; a
fresh spec for the same event and mention set gives a paraphrase.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from freebind.mini.world import (ACOUSTIC_ATTRIBUTES, CLASSES, VISUAL_ATTRIBUTES, Event)

NOUNS: dict[str, tuple[str, ...]] = {
    "dog": ("dog", "puppy", "hound"), "cat": ("cat", "kitten", "kitty"),
    "cow": ("cow", "calf", "heifer"), "rooster": ("rooster", "cockerel", "chanticleer"),
    "frog": ("frog", "toad", "bullfrog"), "bird": ("bird", "songbird", "sparrow"),
    "bee": ("bee", "bumblebee", "hornet"), "bell": ("bell", "chime", "handbell"),
    "drum": ("drum", "bongo", "tom-tom"), "guitar": ("guitar", "banjo", "lute"),
    "piano": ("piano", "keyboard", "pianoforte"), "flute": ("flute", "recorder", "fife"),
    "trumpet": ("trumpet", "bugle", "cornet"), "siren": ("siren", "alarm", "klaxon"),
    "car_horn": ("car horn", "horn", "hooter"), "engine": ("engine", "motor", "generator"),
    "train": ("train", "locomotive", "railcar"), "clock": ("clock", "timer", "metronome"),
    "phone": ("phone", "telephone", "cellphone"), "hammer": ("hammer", "mallet", "sledgehammer"),
}
VERBS: dict[str, tuple[str, ...]] = {
    "dog": ("barks", "yaps", "woofs"), "cat": ("meows", "mews", "yowls"),
    "cow": ("moos", "bellows"), "rooster": ("crows", "calls"), "frog": ("croaks", "ribbits"),
    "bird": ("chirps", "tweets", "sings"), "bee": ("buzzes", "drones"),
    "bell": ("rings", "chimes", "tolls"), "drum": ("beats", "thumps", "booms"),
    "guitar": ("strums", "twangs"), "piano": ("plays", "tinkles"),
    "flute": ("toots", "pipes"), "trumpet": ("blares", "blasts"),
    "siren": ("wails", "howls"), "car_horn": ("honks", "beeps"),
    "engine": ("rumbles", "roars", "revs"), "train": ("rattles", "clatters"),
    "clock": ("ticks", "clicks", "tocks"), "phone": ("rings", "trills"),
    "hammer": ("knocks", "bangs", "pounds"),
}
GENERIC_VERBS = ("makes a sound", "is heard", "can be heard", "sounds")

#: Visual words (adjectives).
VISUAL_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "colour": {"red": ("red", "crimson", "scarlet"), "blue": ("blue", "azure", "navy"),
               "green": ("green", "emerald", "lime"), "yellow": ("yellow", "golden", "lemon"),
               "purple": ("purple", "violet", "lilac"),
               "orange": ("orange", "amber", "tangerine")},
    "size": {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")},
    "texture": {"plain": ("plain", "solid", "smooth"),
                "striped": ("striped", "stripy", "banded"),
                "dotted": ("dotted", "spotted", "speckled")},
}
#: Acoustic words: adverbial phrases (after a verb) and adjectives (before "sound").
ACOUSTIC_ADVERBS: dict[str, dict[str, tuple[str, ...]]] = {
    "loudness": {"quiet": ("quietly", "softly", "faintly"),
                 "loud": ("loudly", "noisily", "powerfully")},
    "pitch": {"low": ("in a low pitch", "with a deep tone", "in a bass register"),
              "high": ("in a high pitch", "with a shrill tone", "in a squeaky register")},
    "rhythm": {"single": ("once", "a single time", "just once"),
               "repeated": ("repeatedly", "again and again", "over and over"),
               "continuous": ("continuously", "steadily", "nonstop")},
}
ACOUSTIC_ADJECTIVES: dict[str, dict[str, tuple[str, ...]]] = {
    "loudness": {"quiet": ("quiet", "soft", "faint"), "loud": ("loud", "noisy", "powerful")},
    "pitch": {"low": ("low", "deep", "bassy"), "high": ("high", "shrill", "squeaky")},
    "rhythm": {"single": ("single", "lone", "brief"),
               "repeated": ("repeated", "recurring", "rhythmic"),
               "continuous": ("continuous", "steady", "constant")},
}
SOUND_NOUNS = ("sound", "noise", "recording")
PICTURE_NOUNS = ("photo", "picture", "drawing", "image")

#: Sentence forms. "verb": "<np> <verb> <adverbials>"; "sound": "<adjs> <sound> of <np>";
#: "heard": "<np> is heard <adverbials>"; "picture": "a <picture> of <np>" (visual only).
FORMS = ("verb", "sound", "heard", "picture")

FOCUS_ATTRIBUTES = {
    "audio": ACOUSTIC_ATTRIBUTES,
    "image": VISUAL_ATTRIBUTES,
    "both": (*VISUAL_ATTRIBUTES, *ACOUSTIC_ATTRIBUTES),
}


@dataclass(frozen=True)
class CaptionSpec:
    """Every wording choice of one caption, independent of the attribute values."""

    mention: tuple[str, ...]        # attributes named, in the order they are spoken
    form: str
    determiner: str
    synonyms: tuple[int, ...]       # one index per slot: noun, verb, sound noun, attributes
    joiner: str


def caption_spec(g: np.random.Generator, mention: Iterable[str], allow_picture: bool = True
                 ) -> CaptionSpec:
    """Draw wording choices for a caption mentioning ``mention`` attributes."""
    mention = list(mention)
    acoustic = [a for a in mention if a in ACOUSTIC_ATTRIBUTES]
    forms = ["verb", "sound", "heard"]
    if allow_picture and not acoustic:
        forms.append("picture")
    form = forms[int(g.integers(len(forms)))]
    visual = [a for a in mention if a in VISUAL_ATTRIBUTES]
    g.shuffle(visual)
    g.shuffle(acoustic)
    return CaptionSpec(mention=tuple(visual + acoustic), form=form,
                       determiner=("a", "the")[int(g.integers(2))],
                       synonyms=tuple(int(x) for x in g.integers(0, 60, size=12)),
                       joiner=(" and ", ", ", " ")[int(g.integers(3))])


def draw_mention(g: np.random.Generator, focus: str, p: float = 0.65) -> tuple[str, ...]:
    """Each attribute of the focus kind is named with probability ``p``."""
    attrs = FOCUS_ATTRIBUTES[focus]
    return tuple(a for a in attrs if g.random() < p)


def render_caption(event: Event, spec: CaptionSpec) -> str:
    syn = spec.synonyms

    def pick(options, slot):
        return options[syn[slot] % len(options)]

    visual = [a for a in spec.mention if a in VISUAL_ATTRIBUTES]
    acoustic = [a for a in spec.mention if a in ACOUSTIC_ATTRIBUTES]
    adjs = [pick(VISUAL_WORDS[a][getattr(event, a)], 3 + i) for i, a in enumerate(visual)]
    noun = pick(NOUNS[event.cls], 0)
    np_ = " ".join([spec.determiner, *adjs, noun])
    slots = {a: 6 + ACOUSTIC_ATTRIBUTES.index(a) for a in acoustic}
    if spec.form == "sound":
        words = [pick(ACOUSTIC_ADJECTIVES[a][getattr(event, a)], slots[a]) for a in acoustic]
        sound = pick(SOUND_NOUNS, 2)
        lead = ", ".join(words) if spec.joiner == ", " else " ".join(words)
        article = "the" if spec.determiner == "the" else "a"
        text = f"{article} {lead + ' ' if lead else ''}{sound} of {np_}"
    elif spec.form == "picture":
        text = f"a {pick(PICTURE_NOUNS, 2)} of {np_}"
    else:
        phrases = [pick(ACOUSTIC_ADVERBS[a][getattr(event, a)], slots[a]) for a in acoustic]
        if spec.form == "verb":
            verbs = VERBS[event.cls] + GENERIC_VERBS
            head = f"{np_} {pick(verbs, 1)}"
        else:
            head = f"{np_} {pick(('is heard', 'can be heard'), 1)}"
        text = head
        if phrases:
            if spec.joiner == " and " and len(phrases) > 1:
                text = head + " " + ", ".join(phrases[:-1]) + " and " + phrases[-1]
            elif spec.joiner == ", ":
                text = head + ", " + ", ".join(phrases)
            else:
                text = head + " " + " ".join(phrases)
    text = _ARTICLE.sub(r"\1an \2", text)
    return text[0].upper() + text[1:] if spec.synonyms[11] % 2 else text


_ARTICLE = re.compile(r"(^|\s)a ([aeiou])")


def caption(event: Event, g: np.random.Generator, focus: str = "both", p: float = 0.65,
            mention: Iterable[str] | None = None) -> str:
    """One random caption of ``event`` naming its class and some ``focus`` attributes."""
    if mention is None:
        mention = draw_mention(g, focus, p)
    return render_caption(event, caption_spec(g, mention))


def paraphrase_pair(event: Event, g: np.random.Generator, mention: Iterable[str],
                    tries: int = 8) -> tuple[CaptionSpec, CaptionSpec]:
    """Two wording specs for the same mention set whose texts differ (when possible)."""
    mention = tuple(mention)
    a = caption_spec(g, mention, allow_picture=False)
    b = a
    for _ in range(tries):
        b = caption_spec(g, mention, allow_picture=False)
        if render_caption(event, b) != render_caption(event, a):
            break
    return a, b


# ----------------------------------------------------------------------------- tokenising

_WORD = re.compile(r"[a-z]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased alphabetic words; punctuation and digits are dropped."""
    return _WORD.findall(text.lower())


def vocabulary() -> tuple[str, ...]:
    """Every word the caption grammar can produce, plus common prompt words, sorted."""
    words: set[str] = set()

    def add(phrases):
        for ph in phrases:
            words.update(tokenize(ph))

    for table in (NOUNS, VERBS):
        for v in table.values():
            add(v)
    add(GENERIC_VERBS)
    add(SOUND_NOUNS)
    add(PICTURE_NOUNS)
    for tables in (VISUAL_WORDS, ACOUSTIC_ADVERBS, ACOUSTIC_ADJECTIVES):
        for by_value in tables.values():
            for v in by_value.values():
                add(v)
    add(["a an the of is heard can be", *(c.replace("_", " ") for c in CLASSES)])
    return tuple(sorted(words))
