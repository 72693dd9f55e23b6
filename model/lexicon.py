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

import re

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
    """A compiled pattern set with a cheap substring pre-check (``in`` is much faster than re)."""

    def __init__(self, patterns: tuple[str, ...], triggers: tuple[str, ...] = ()):
        self.pattern = _compile(patterns)
        self.triggers = triggers

    def search(self, scanned: str) -> bool:
        """Whether any pattern matches ``scanned`` (a :func:`scan_text` result)."""
        if self.triggers and not any(t in scanned for t in self.triggers):
            return False
        return self.pattern.search(scanned) is not None


def _compile(patterns: tuple[str, ...]) -> re.Pattern[str]:
    # Texts are lower-cased once by ``scan_text``; IGNORECASE would make every search slower.
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.MULTILINE)


# Every pattern of a lexicon contains at least one of its triggers (checked by the tests).
ELICITATION = Lexicon(
    ELICITATION_PATTERNS,
    (
        "step",
        "show",
        "explain",
        "reason",
        "think",
        "chain",
        "walk",
        "break",
        "justif",
        "rationale",
        "deriv",
        "before",
        "first",
        "begin",
        "intermediate",
        "detailed",
        "full",
        "complete",
        "thorough",
        "let",
        "scratch",
        "how",
        "list",
        "enumerate",
        "verify",
        "check",
        "work",
        "logical",
    ),
)
RUBRIC = Lexicon(
    RUBRIC_PATTERNS,
    (
        "rubric",
        "grade",
        "score",
        "scale",
        "1",
        "one",
        "rate",
        "evaluate",
        "which",
        "critique",
        "preference",
        "judge",
        "correct",
    ),
)
FORMAT = Lexicon(
    FORMAT_PATTERNS,
    (
        "boxed",
        "final answer",
        "<answer>",
        "answer",
        "json",
        "xml",
        "yaml",
        "reasoning",
        "end with",
        "conclude with",
        "finish with",
        "####",
    ),
)
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
