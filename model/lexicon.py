"""Phrasing lexicons: what reasoning elicitation, grading requests and answer-format demands look like.

What it knows: general English patterns by which a client asks a model to expose its
reasoning ("think it through", "show your work", "justify each step"), to grade or score
an answer against a rubric, or to wrap its answer in a fixed machine-readable format. The
patterns are written from how people and harvesting scripts phrase such requests in
general, not from the simulator's templates, so the detector is not tuned to its own data.

What it does not know: whether a given use is harmful. A student may ask for steps; the
sequence model weighs these flags together with everything else.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

_FLAGS = re.IGNORECASE

ELICITATION_PATTERNS: tuple[str, ...] = (
    r"step[- ]by[- ]step",
    r"show (?:all )?(?:your|the) (?:work|working|steps|reasoning|derivation)",
    r"explain (?:your|the|each|every) (?:reasoning|thinking|thought process|logic|steps?)",
    r"(?:reason|think) (?:it )?(?:through|carefully|aloud|out loud|step)",
    r"\bthink (?:hard|deeply|before (?:you )?answer)",
    r"chain[- ]of[- ]thought",
    r"walk (?:me|us) through",
    r"break (?:it|this|the problem) down",
    r"justify (?:each|every|your|all)",
    r"\brationale\b",
    r"\bderiv(?:e|ation) (?:it|the|your)",
    r"before (?:giving|stating|writing|you give) (?:the|your) (?:final )?answer",
    r"(?:first|begin by) (?:outline|lay(?:ing)? out|explain|describ|analy[sz])",
    r"intermediate (?:steps|results|reasoning)",
    r"(?:detailed|full|complete|thorough) (?:reasoning|explanation|derivation|solution)",
    r"let'?s think",
    r"scratch ?pad",
    r"<think(?:ing)?>",
    r"\bexplain why\b",
    r"how (?:did|do) you (?:get|arrive|reach)",
    r"(?:list|enumerate) (?:the|your|all) (?:assumptions|steps)",
    r"verify (?:each|your|every) step",
    r"(?:self[- ]check|double[- ]check) (?:your|the) (?:work|answer|reasoning)",
    r"reasoning (?:trace|process|steps|path)",
    r"\bwork (?:it )?out\b",
    r"logical (?:steps|chain|argument)",
    r"explain (?:it|this) (?:like|as if|in detail)",
)

RUBRIC_PATTERNS: tuple[str, ...] = (
    r"\brubric\b",
    r"\bgrade (?:this|the|each|my|following)",
    r"\bscore (?:this|the|each|from|on a|out of)",
    r"(?:on|using) a (?:scale|score) (?:of|from)",
    r"\b(?:1 ?[-–] ?(?:5|10)|1 to (?:5|10)|one to (?:five|ten))\b",
    r"\brate (?:this|the|each|how)",
    r"\bevaluate (?:the|this|each) (?:answer|response|solution|completion)",
    r"\bwhich (?:answer|response|completion) is (?:better|best|more)",
    r"\bcritique\b",
    r"\bpreference\b",
    r"\bjudge (?:the|this|whether|which)",
    r"\bis (?:this|the following) (?:answer|solution|response) correct",
)

FORMAT_PATTERNS: tuple[str, ...] = (
    r"\\boxed",
    r"final answer",
    r"<answer>",
    r"\banswer:\s*$",
    r"(?:respond|reply|answer|output|return) (?:only )?(?:in|as|with) (?:valid )?(?:json|xml|yaml)",
    r"\bjson (?:object|format|schema)\b",
    r"(?:the|your) answer (?:in|inside|within|between)",
    r"\"reasoning\"\s*:",
    r"\"answer\"\s*:",
    r"(?:end|conclude|finish) with (?:the|your|a) (?:final )?(?:answer|line)",
    r"####",
)

CODE_PATTERNS: tuple[str, ...] = (
    r"```",
    r"\bdef \w+\(",
    r"\bclass \w+[:(]",
    r"\bfunction \w+\(",
    r"#include",
    r"\bimport \w+",
    r"traceback \(most recent call last\)",
    r"\breturn\b.*;",
    r"[{};]\s*\n",
    r"\bassert \w+\(",
)

MATH_PATTERNS: tuple[str, ...] = (
    r"\d+\s*[-+*/^=×÷]\s*\d+",
    r"\$[^$]+\$",
    r"\\(?:frac|sqrt|sum|int|cdot|pi|theta)",
    r"\bhow (?:many|much)\b",
    r"\b(?:solve|compute|calculate|evaluate|simplify|prove)\b",
    r"\b(?:equation|integer|probability|triangle|polynomial|remainder|fraction)s?\b",
)


class Lexicon:
    """A pattern set that says whether any of its patterns occurs in a scanned prompt.

    ``search`` gives exactly the answer of one ``|``-joined regex, several times faster
    (see :class:`LexiconSet`). Edit the pattern tuples freely: the pre-checks are derived
    from the patterns themselves.
    """

    def __init__(self, patterns: tuple[str, ...]):
        self.patterns = patterns
        self.requirements = tuple(requirement(p, _PATTERN_FLAGS) for p in patterns)
        self._one = LexiconSet((self,))

    def search(self, scanned: str) -> bool:
        """Whether any pattern matches ``scanned`` (a :func:`scan_text` result)."""
        return self._one.search(scanned)[0]


class LexiconSet:
    """Several lexicons asked of one text at once: ``search`` gives one answer per lexicon.

    Why it is fast, and still exact: a regex that scans a whole prompt for dozens of
    alternatives costs tens of microseconds, yet most prompts match none of them. Every
    pattern has a :class:`Requirement`, strings of which each match contains one. A
    string can only occur in a text if every run of 4 bytes of it occurs there, which one
    vectorised table look-up answers for all strings of all lexicons together. Only the
    few strings that pass are looked for (``str.find``), and a pattern runs only where
    one of its strings really occurs: anchored there when its matches start with them
    (``pattern.match``), else once over the text. The answers are those of the joined
    regexes (the tests compare them on every prompt of ``data_samples``); shipped
    lexicons, 5 asked together: about 30 µs per prompt instead of 300.
    """

    def __init__(self, lexicons: Sequence[Lexicon]):
        self.lexicons = tuple(lexicons)
        self._patterns: list[tuple[int, Requirement | None, re.Pattern[str]]] = []
        self._strings: list[tuple[int, str]] = []  # (pattern, string) for each string
        self._short: list[int] = []  # strings too short to have a gram: always tried
        gated: list[int] = []  # the others: tried when all their grams occur
        codes: list[np.ndarray] = [np.zeros(0, dtype=np.uint32)]
        starts: list[int] = []
        n_codes = 0
        for group, lexicon in enumerate(self.lexicons):
            for pattern, req in zip(lexicon.patterns, lexicon.requirements, strict=True):
                for string in sorted(req.strings) if req is not None else [""]:
                    grams = _gram_codes(string)
                    if len(grams):
                        gated.append(len(self._strings))
                        codes.append(grams)
                        starts.append(n_codes)
                        n_codes += len(grams)
                    else:
                        self._short.append(len(self._strings))
                    self._strings.append((len(self._patterns), string))
                self._patterns.append((group, req, _compile((pattern,))))
        self._codes = np.concatenate(codes).astype(np.intp)  # grams of the gated strings, flat
        self._starts = np.array(starts, dtype=np.intp)
        self._gated = np.array(gated, dtype=np.intp)

    def search(self, scanned: str) -> tuple[bool, ...]:
        """For each lexicon, whether any of its patterns matches ``scanned``."""
        candidates = self._short
        if len(self._gated):
            present = np.zeros(1 << _GRAM_BITS, dtype=bool)
            present[_gram_codes(scanned)] = True
            may_occur = np.logical_and.reduceat(present[self._codes], self._starts)
            candidates = candidates + self._gated[may_occur].tolist()
        found = [False] * len(self.lexicons)
        searched: set[int] = set()  # patterns already searched in full
        for i in candidates:
            p, string = self._strings[i]
            group, req, pattern = self._patterns[p]
            if found[group]:
                continue
            if req is not None and req.prefix:  # every match starts with one of the strings
                at = scanned.find(string)
                while at >= 0:
                    if pattern.match(scanned, at) is not None:
                        found[group] = True
                        break
                    at = scanned.find(string, at + 1)
            elif p not in searched and string in scanned:
                searched.add(p)
                found[group] = pattern.search(scanned) is not None
        return tuple(found)


_GRAM_BITS = 14  # size of the presence table (collisions only let more strings through)


def _gram_codes(text: str) -> np.ndarray:
    """A hash of every run of 4 bytes of the text's UTF-8 (a string's runs are in any text
    that contains the string)."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) < 4:
        return np.zeros(0, dtype=np.uint32)
    grams = np.ndarray((len(data) - 3,), dtype="<u4", buffer=data, strides=(1,))  # overlapping
    return (grams * np.uint32(0x9E3779B1)) >> np.uint32(32 - _GRAM_BITS)


# Texts are lower-cased once by ``scan_text``; IGNORECASE would make every search slower.
_PATTERN_FLAGS = re.MULTILINE


def _compile(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), _PATTERN_FLAGS)


# -- necessary substrings of a regex --------------------------------------------------------------
#
# Worked out on the parse tree. An "exact" node matches only a few known strings (a literal,
# a small character class, an optional literal, an alternation of those); runs of exact
# nodes concatenate into longer strings; an alternation needs one of its branches'
# requirements; a repeat of at least one needs its body's. Anything else (``\d``, ``.``,
# look-arounds, ...) is "no requirement", so a pattern the analysis does not understand is
# simply searched in full: the analysis can make the lexicons slower, never wrong.

_MAX_STRINGS = 16  # strings kept per exact set or requirement
_MAX_CLASS = 8  # characters of a class still treated as exact


class Requirement(NamedTuple):
    """Strings of which every match of a pattern contains one.

    ``prefix``: every match also starts with one of them, so a match can be tried just
    where they occur instead of at every position of the text.
    """

    strings: frozenset[str]
    prefix: bool


class _Info(NamedTuple):
    exact: set[str] | None  # every string the node can match, when few
    need: set[str] | None  # strings of which each match contains one
    prefix: bool  # ... and starts with one


_NOTHING = _Info(None, None, False)


def _needed(info: _Info) -> tuple[set[str] | None, bool]:
    if info.need is not None:
        return info.need, info.prefix
    if info.exact is None or "" in info.exact:
        return None, False
    return info.exact, True


def _selectivity(candidate: tuple[set[str], bool]) -> tuple[int, bool, int, int]:
    """Long enough to be rare (6 characters is plenty), a prefix, few strings, longer."""
    strings, prefix = candidate
    shortest = min(map(len, strings))
    return min(shortest, 6), prefix, -len(strings), shortest


def requirement(pattern: str, flags: int = 0) -> Requirement | None:
    """What every match of ``pattern`` must contain; None if nothing is known.

    >>> sorted(requirement(r"\\bwalk (?:me|us) through").strings)
    ['walk me through', 'walk us through']
    >>> requirement(r"\\d+\\s*\\d+") is None
    True
    """
    if flags & (re.IGNORECASE | re.VERBOSE):
        return None  # case folding would make ``in`` miss matches
    try:
        sre: Any = importlib.import_module("re._parser")  # the parse tree and its opcodes
    except ImportError:
        return None

    def node(op: Any, av: Any) -> _Info:
        if op is sre.LITERAL:
            return _Info({chr(av)}, None, False)
        if op is sre.AT:
            return _Info({""}, None, False)  # an anchor matches the empty string
        if op is sre.IN:
            chars: set[str] = set()
            for item_op, item in av:
                if item_op is sre.LITERAL:
                    chars.add(chr(item))
                elif item_op is sre.RANGE and item[1] - item[0] < _MAX_CLASS:
                    chars.update(chr(c) for c in range(item[0], item[1] + 1))
                else:
                    return _NOTHING
            return _Info(chars, None, False) if len(chars) <= _MAX_CLASS else _NOTHING
        if op is sre.SUBPATTERN:
            _group, add_flags, del_flags, body = av
            return _NOTHING if add_flags or del_flags else seq(body)
        if op is sre.BRANCH:
            exact: set[str] | None = set()
            need: set[str] | None = set()
            prefix = True
            for branch in map(seq, av[1]):
                exact = None if branch.exact is None or exact is None else exact | branch.exact
                strings, branch_prefix = _needed(branch)
                need = None if strings is None or need is None else need | strings
                prefix = prefix and branch_prefix
            if exact is not None and len(exact) > _MAX_STRINGS:
                exact = None
            if need is not None and len(need) > 2 * _MAX_STRINGS:
                need = None
            return _Info(exact, need, prefix and need is not None)
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", None)):
            low, high, body = av
            inner = seq(body)
            if low == 0:
                if high == 1 and inner.exact is not None:
                    return _Info(inner.exact | {""}, None, False)  # optional
                return _NOTHING
            if low == high == 1:
                return inner
            strings, prefix = _needed(inner)  # at least one copy of the body
            return _Info(None, strings, prefix)
        return _NOTHING

    def seq(items: Any) -> _Info:
        candidates: list[tuple[set[str], bool]] = []
        run = {""}  # exact strings of the current run of exact nodes
        at_start = True  # the run starts where the sequence starts
        whole = True  # every node so far was exact and the run was never cut
        for op, av in items:
            info = node(op, av)
            candidates.append((run, at_start))  # a run's start is as necessary as the run
            if info.exact is not None and len(run) * len(info.exact) <= _MAX_STRINGS:
                run = {a + b for a in run for b in info.exact}
                continue
            strings, prefix = _needed(info)
            if strings is not None:
                candidates.append((strings, prefix and at_start and run == {""}))
            whole, at_start = False, False
            run = set(info.exact) if info.exact is not None else {""}
        candidates.append((run, at_start))
        usable = [c for c in candidates if "" not in c[0]]
        best = max(usable, key=_selectivity, default=None)
        if best is None:
            return _Info(run if whole else None, None, False)
        return _Info(run if whole else None, best[0], best[1])

    try:
        tree = sre.parse(pattern, flags)
        if tree.state.flags & re.IGNORECASE:  # an inline (?i) at the start
            return None
        strings, prefix = _needed(seq(tree))
    except (re.error, TypeError, ValueError, AttributeError):
        return None  # not understood (another Python's parse tree): search in full
    return Requirement(frozenset(strings), prefix) if strings else None


ELICITATION = Lexicon(ELICITATION_PATTERNS)
RUBRIC = Lexicon(RUBRIC_PATTERNS)
FORMAT = Lexicon(FORMAT_PATTERNS)
CODE = Lexicon(CODE_PATTERNS)
MATH = Lexicon(MATH_PATTERNS)

#: Only this much of each end of a prompt is scanned: wrappers sit at the ends, and pasted
#: documents can be hundreds of kilobytes.
SCAN_CHARS = 2_000


def scan_text(text: str) -> str:
    """The part of a prompt the lexicons look at: head and tail of long prompts, lower-cased."""
    if len(text) > 2 * SCAN_CHARS:
        text = text[:SCAN_CHARS] + "\n" + text[-SCAN_CHARS:]
    return text.lower()


SCRIPT_AGENT_RE = re.compile(
    r"python-requests|httpx|aiohttp|urllib|curl/|wget|go-http-client|node-fetch|axios|okhttp"
    r"|java/|libwww|openai-python|anthropic-python|langchain|llamaindex|scrapy",
    _FLAGS,
)
