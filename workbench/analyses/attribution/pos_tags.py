"""Part-of-speech classes of a tokenizer's vocabulary, offline: ReAGent's POS-matched replacer (``replacer="pos"``).

What the reference does (Inseq 0.7.1 ``POSTagTokenSampler``, the authors' ``token_sampler/postag.py``): decode
every vocabulary id alone, strip it, tag that one word with NLTK's perceptron tagger (Penn tags, ~45) and group
the ids by tag; a prompt token is replaced by a uniform draw from its own token's group. The tagging is *by
table*, never in context: the prompt token gets the tag its id got alone. NLTK's tagger data is downloaded at
run time, which is impossible offline, so this module builds the same kind of table from what a wheel ships:

* the lexicon of the ``lemminflect`` package (``resources/lemma_lu.csv.gz``: ~80,000 English word forms with
  their possible word classes noun / verb / adj / adv / aux, and ``infl_lu.csv.gz``: each lemma's inflections,
  from the NIH SPECIALIST lexicon; read as files, the package is never imported; ``pip install
  'lm-workbench[pos]'``),
* small hand-written closed-class lists below (determiners, pronouns, adpositions, conjunctions, auxiliaries,
  particles, number words, interjections), and character rules for punctuation, symbols, digits and whitespace.

Tag set: the Universal POS tags (UD v2: NOUN PROPN VERB AUX ADJ ADV PRON DET ADP CCONJ SCONJ PART NUM INTJ PUNCT
SYM X; PART is left empty, rule 2) plus SPACE (whitespace-only tokens, as spaCy) and SPECIAL (the tokenizer's
special tokens, never sampled).
Coarse rather than Penn's: a word alone cannot be told apart between most Penn tags of one class (``walked``
VBD / VBN, ``run`` VB / VBP / NN), the lexicon records classes, not inflection tags, and coarse classes keep the
sampling pools large. A token's *class* is its tag plus its *shape*: whether it starts with a space
(``" Paris"`` vs ``"Paris"``; whitespace tokens are one class), so that a word-initial token is replaced by a
word-initial one and a word piece by a piece (a replacement never glues two words together nor splits one), and
its case (lower, Capitalized, UPPER; for tokens without letters: one character or more), so that ``" the"`` is
replaced by ``" some"`` rather than ``" ALL"`` and ``"."`` by ``","`` rather than ``"####"``. The reference
tags the case-folded word alone and keeps neither.

Rules, in order, on the token's text without its leading space (first match wins):

1. special token -> SPECIAL; whitespace only -> SPACE; a broken UTF-8 byte piece (decodes to U+FFFD) -> X;
2. the closed-class lists, lower-cased; a word in several takes the first list in the order of :data:`CLOSED`
   (``that`` is DET, ``her`` PRON, ``to`` ADP, ``can`` AUX, ``&`` CCONJ; ``not`` / ``n't`` are ADV and ``'s``
   AUX rather than UD's PART: alone in a class of their own they would always fall back to uniform);
3. only punctuation (Unicode P*) -> PUNCT; only punctuation and symbols (S*) -> SYM; a number (digits with
   ``, . : /`` inside, optional sign or ``%``) -> NUM;
4. the lexicon, lower-cased: a word with several classes gets one by :data:`OPEN_PRIORITY`: an ``-ly`` word that
   can be an adverb is ADV; else a form of an adjective with comparative forms is ADJ (``old``, ``light``),
   else a form of a verb with an irregular past is VERB (``go``, ``read``, ``saw``), else NOUN, VERB, ADJ, ADV
   in that order (``capital``, ``watch`` NOUN); a capitalized form found only as written (``Aachen``) is PROPN;
5. any other alphabetic word that starts with a capital -> PROPN (names, and the capitalized pieces of names);
6. anything else -> X (word pieces such as ``ville``, code, foreign scripts).

Known limits, by design of a table: a word keeps one class whatever its context (``run`` is always NOUN, ``that``
always DET); sentence-initial capitals are found through the lower-cased form (``The`` -> DET) but an unknown
capitalized word is taken for a name. The table is built once per tokenizer (about a second for 50k tokens) and
stored under the workbench cache in ``pos-tags/``, keyed by a hash of the tokenizer's content (its full
serialized backend or vocabulary, its special ids and size), of the lexicon file and of this module's source: a
changed tokenizer, lexicon or rule never reuses an old table.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..._paths import cache_root
from ..._tempnames import write_atomically
from ...errors import MissingExtraError
from .vocab import special_ids

TAGS = ("NOUN", "PROPN", "VERB", "AUX", "ADJ", "ADV", "PRON", "DET", "ADP", "CCONJ", "SCONJ", "PART", "NUM",
        "INTJ", "PUNCT", "SYM", "SPACE", "X", "SPECIAL")
TAG_ID = {t: i for i, t in enumerate(TAGS)}

# closed classes, lower-cased; a word in several lists takes the first (this order)
CLOSED: dict[str, tuple[str, ...]] = {
    "AUX": ("be", "am", "is", "are", "was", "were", "been", "being", "have", "has", "had", "having", "do", "does",
            "did", "will", "would", "shall", "should", "can", "could", "may", "might", "must", "ought", "'re", "'ve",
            "'ll", "'m", "'d", "'s", "ca", "wo"),  # "'s": the contraction of is / has, or the possessive (UD PART)
    "DET": ("the", "a", "an", "this", "that", "these", "those", "some", "any", "no", "every", "each", "all", "both",
            "either", "neither", "another", "such", "what", "which", "whatever", "whichever", "my", "your", "his",
            "its", "our", "their", "much", "many", "few", "several", "enough", "whose"),
    "PRON": ("i", "me", "you", "he", "him", "she", "her", "it", "we", "us", "they", "them", "myself", "yourself",
             "himself", "herself", "itself", "ourselves", "yourselves", "themselves", "mine", "yours", "hers", "ours",
             "theirs", "who", "whom", "whoever", "someone", "somebody", "something", "anyone", "anybody", "anything",
             "everyone", "everybody", "everything", "nobody", "nothing", "none", "thou", "thee", "y'all"),
    "ADP": ("of", "in", "on", "at", "by", "for", "with", "about", "against", "between", "into", "through", "during",
            "before", "after", "above", "below", "to", "from", "up", "down", "out", "off", "over", "under", "across",
            "along", "among", "around", "behind", "beneath", "beside", "besides", "beyond", "despite", "except",
            "inside", "near", "onto", "outside", "past", "per", "since", "than", "toward", "towards", "upon", "via",
            "within", "without", "throughout", "like", "unlike", "amid", "amongst", "underneath", "till"),
    "CCONJ": ("and", "or", "but", "nor", "yet", "so", "plus", "&"),
    "SCONJ": ("if", "because", "although", "though", "while", "whereas", "unless", "until", "whether", "as",
              "whilst", "lest"),
    "PART": (),  # UD's PART words are elsewhere: "not", "n't" with the adverbs, "'s" with the auxiliaries, "to" ADP
    "NUM": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
            "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
            "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "hundred", "thousand", "million",
            "billion", "trillion", "dozen"),
    "INTJ": ("oh", "ah", "wow", "hello", "hi", "hey", "yes", "ok", "okay", "oops", "ouch", "hmm", "please", "thanks",
             "alas", "hooray", "bye", "yeah", "nope", "yep", "uh", "um"),
    "ADV": ("when", "where", "how", "why", "here", "there", "then", "now", "very", "too", "also", "just", "only",
            "even", "still", "already", "never", "always", "often", "again", "ever", "well", "not", "n't", "'t"),
}
CLOSED_TAG = {w: tag for tag, words in reversed(CLOSED.items()) for w in words}  # the first list wins
OPEN_PRIORITY = ("AUX", "ADJ+", "VERB+", "NOUN", "VERB", "ADJ", "ADV")  # a lexicon word with several classes: the first
_LEXICON_CLASS = {"noun": "NOUN", "verb": "VERB", "adj": "ADJ", "adv": "ADV", "aux": "AUX"}
_NUMBER = re.compile(r"[+-]?\d+(?:[.,:/]\d+)*%?")
LEXICON_PACKAGE = "lemminflect"


def lexicon_path(name: str = "lemma_lu.csv.gz") -> Path:
    """A lexicon file inside the installed ``lemminflect`` wheel (found without importing the package)."""
    spec = importlib.util.find_spec(LEXICON_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "resources" / name
        if path.is_file():
            return path
    raise MissingExtraError("replacer='pos' tags the vocabulary with the word list of lemminflect, which is not "
                            "installed: pip install 'lm-workbench[pos]' (or use replacer='uniform')")


def _rows(name: str):
    with gzip.open(lexicon_path(name), "rt", encoding="utf-8") as f:
        for line in f:
            yield line.rstrip("\n").split(",")


def load_lexicon() -> dict[str, frozenset[str]]:
    """Word form (as written) -> its possible UPOS classes, plus the marks ``ADJ+`` (a form of an adjective that
    has comparative forms, ``old``) and ``VERB+`` (a form of a verb with an irregular past, ``go``, ``read``)."""
    gradable = {row[0] for row in _rows("infl_lu.csv.gz") if row[1] == "adj" and len(row) > 2 and row[2]}
    irregular = {row[0] for row in _rows("infl_lu.csv.gz")
                 if row[1] == "verb" and len(row) > 2 and row[2] and not row[2].endswith("ed")}
    out: dict[str, set[str]] = {}
    for word, category, lemmas in _rows("lemma_lu.csv.gz"):
        if category not in _LEXICON_CLASS:
            continue
        classes = out.setdefault(word, set())
        classes.add(_LEXICON_CLASS[category])
        lemma_set = set(lemmas.split("/"))
        if category == "adj" and lemma_set & gradable:
            classes.add("ADJ+")
        if category == "verb" and lemma_set & irregular:
            classes.add("VERB+")
    return {w: frozenset(c) for w, c in out.items()}


def _open_class(word: str, classes: frozenset[str]) -> str:
    if word.endswith("ly") and "ADV" in classes:
        return "ADV"
    return next(t.rstrip("+") for t in OPEN_PRIORITY if t in classes)


def tag_word(text: str, lexicon: dict[str, frozenset[str]]) -> str:
    """The coarse tag of one token's text (leading space or not), by the module's rules 1-6."""
    word = text.strip()
    if not word:
        return "SPACE"
    if "\ufffd" in word:
        return "X"
    lower = word.lower().replace("\u2019", "'")
    if lower in CLOSED_TAG:
        return CLOSED_TAG[lower]
    cats = {unicodedata.category(c)[0] for c in word}
    if cats == {"P"}:
        return "PUNCT"
    if cats <= {"P", "S"}:
        return "SYM"
    if _NUMBER.fullmatch(word):
        return "NUM"
    if lower in lexicon:
        return _open_class(lower, lexicon[lower])
    if word in lexicon:
        return "PROPN" if word[0].isupper() and "NOUN" in lexicon[word] else _open_class(word, lexicon[word])
    if word.isalpha() and word[0].isupper() and len(word) > 1:
        return "PROPN"
    return "X"


def tokenizer_digest(tokenizer) -> str:
    """A hash of everything the table depends on: the tokenizer's content, the lexicon file and this module."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a fast tokenizer: its whole serialized state (vocabulary, merges, decoder, added tokens)
        h.update(backend.to_str().encode())
    else:
        h.update(type(tokenizer).__name__.encode())
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps([len(tokenizer), special_ids(tokenizer)]).encode())
    h.update(lexicon_path().read_bytes())
    h.update(lexicon_path("infl_lu.csv.gz").read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class PosTable:
    """Every token id's coarse tag (index into :data:`TAGS`), whether its text starts with a space, and its case
    (:func:`case_of`)."""

    tag: Tensor  # [n_tokens] long
    space: Tensor  # [n_tokens] bool
    case: Tensor  # [n_tokens] long, 0-3 (case_of)
    digest: str
    from_cache: bool = False  # read back from the cache folder rather than built now

    def classes(self) -> Tensor:
        """One class id per token: tag, leading space and case together."""
        return (self.tag * 2 + self.space.long()) * 4 + self.case

    def tag_of(self, token_id: int) -> str:
        return TAGS[int(self.tag[token_id])]


def case_of(text: str) -> int:
    """0: lower case (or no cased letter), 1: Capitalized, 2: UPPER (two or more cased letters, all upper); for a
    token without letters: 0 one character, 3 longer (``"."`` vs ``"...."``)."""
    word = text.strip()
    if not any(c.isalpha() for c in word):
        return 0 if len(word) <= 1 else 3
    cased = [c for c in word if c.isupper() or c.islower()]
    if len(cased) >= 2 and all(c.isupper() for c in cased):
        return 2
    return 1 if cased and cased[0].isupper() else 0


def _token_texts(tokenizer) -> tuple[list[str], list[bool]]:
    n = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(n)], clean_up_tokenization_spaces=False)
    raw = tokenizer.convert_ids_to_tokens(list(range(n)))
    space = [t.startswith(" ") or (r or "").startswith(("\u0120", "\u2581")) for t, r in zip(texts, raw)]
    return texts, space


def build_table(tokenizer, digest: str = "") -> PosTable:
    """Tag every id of ``tokenizer`` (no cache)."""
    lexicon = load_lexicon()
    texts, space = _token_texts(tokenizer)
    tags = [TAG_ID[tag_word(t, lexicon)] for t in texts]
    space = [s and tag != TAG_ID["SPACE"] for s, tag in zip(space, tags)]  # whitespace is one class, " " or "\n"
    for i in special_ids(tokenizer):
        if i < len(tags):
            tags[i] = TAG_ID["SPECIAL"]
    case = [case_of(t) for t in texts]
    return PosTable(torch.tensor(tags, dtype=torch.long), torch.tensor(space, dtype=torch.bool),
                    torch.tensor(case, dtype=torch.long), digest)


_MEMORY: dict[str, PosTable] = {}


def pos_table(tokenizer, cache_dir: str | os.PathLike | None = None) -> PosTable:
    """The tag table of ``tokenizer``: from memory, else from ``<cache>/pos-tags/<digest>.safetensors``, else built
    and stored there (atomically; a read-only or damaged cache only costs a rebuild)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    digest = tokenizer_digest(tokenizer)
    path = cache_root(cache_dir) / "pos-tags" / f"{digest}.safetensors"
    key = f"{path}"
    if key in _MEMORY:
        return _MEMORY[key]
    table = None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("digest") == digest and json.loads(meta.get("tags", "[]")) == list(TAGS):
                table = PosTable(f.get_tensor("tag").long(), f.get_tensor("space").bool(), f.get_tensor("case").long(),
                                 digest, from_cache=True)
    except Exception:  # missing, damaged or from another format: build it again
        table = None
    if table is None or len(table.tag) != len(tokenizer):
        table = build_table(tokenizer, digest)
        tensors = {"tag": table.tag.to(torch.uint8), "space": table.space, "case": table.case.to(torch.uint8)}
        try:
            write_atomically(path, lambda tmp: save_file(tensors, str(tmp),
                                                         metadata={"digest": digest, "tags": json.dumps(list(TAGS))}))
        except OSError:
            pass
    _MEMORY[key] = table
    return table
