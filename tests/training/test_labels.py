"""Label files: valid records load, bad ones are named by file, line and field."""

import pytest

from model.events import EventError
from training.labels import prompt_digest, read_labels


def test_reads_labels(tmp_path) -> None:
    p = tmp_path / "labels.jsonl"
    p.write_text(
        '{"account_id": "a", "label": 1, "campaign": "c-1", "kind": "cot_harvest"}\n'
        '{"account_id": "b", "label": 0}\n'
    )
    labels, stats = read_labels(p)
    assert labels["a"].campaign == "c-1" and labels["b"].label == 0 and stats.n_read == 2


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"account_id": "a", "label": 2}', "label"),
        ('{"label": 1}', "account_id"),
        ('{"account_id": "a", "label": 1, "kind": 3}', "kind"),
        ('{"account_id": "a", "label": true}', "label"),
        ('{"account_id": "a", "label": 1, "harvest_prompts": "x"}', "harvest_prompts"),
        ('{"account_id": "a", "label": 1, "harvest_prompts": ["ABC"]}', "harvest_prompts"),
        (
            '{"account_id": "a", "label": 0, "harvest_prompts": ["' + "0" * 64 + '"]}',
            "harvest_prompts",
        ),
    ],
)
def test_bad_label_names_line_and_field(tmp_path, line: str, field: str) -> None:
    p = tmp_path / "labels.jsonl"
    p.write_text('{"account_id": "ok", "label": 0}\n' + line + "\n")
    with pytest.raises(EventError) as err:
        read_labels(p)
    assert f"{p}:2" in str(err.value) and field in str(err.value)
    labels, stats = read_labels(p, on_error="skip")
    assert list(labels) == ["ok"] and stats.n_skipped == 1


def test_harvest_prompts_are_read_as_digests(tmp_path) -> None:
    p = tmp_path / "labels.jsonl"
    digest = prompt_digest("Solve 2+2. Think step by step.")
    p.write_text(
        f'{{"account_id": "a", "label": 1, "harvest_prompts": ["{digest}"]}}\n'
        '{"account_id": "b", "label": 1}\n'
        '{"account_id": "c", "label": 0, "harvest_prompts": []}\n'
    )
    labels, _ = read_labels(p)
    assert labels["a"].harvest_prompts == frozenset({digest})
    assert labels["b"].harvest_prompts is None  # not known, which is not "none harvest"
    assert labels["c"].harvest_prompts == frozenset()
