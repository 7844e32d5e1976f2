"""What the DeepSeek-R1 and gpt-oss-120b synthetic sets share: candidate prompts answered by the tiny
model, each kept answer given to the first set (rarest answers first) still short of rows whose rule
extracts an answer from it; LiveCodeBench rows get a problem the extracted program (lines of digits)
passes, with no input and no output, its private cases pickled as the release ships them; the scale
variant's rows beyond the answered ones are copies (a LiveCodeBench copy has its own problem id)."""
from __future__ import annotations

import base64
import json
import pickle
import re
import zlib


CODE = re.compile(r"^[1-9\n]+$")  # a program the synthetic tests accept: digits and newlines only


def private_cases(cases: list) -> str:
    """LiveCodeBench's private test cases as the release stores them (base64 of zlib of a pickled JSON
    string); written here, read back only through evalkit/safeload.py."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


def answered_rows(bench, model_dir, tok, cands: list[dict], prompts: list, sets: tuple[str, ...],
                  search: tuple[str, ...], lcb: str, parse, n: int, n_all: int, seed: int, *,
                  skip_special_tokens: bool, row_extra=None, batch: int = 1):
    """(rows, payloads, LiveCodeBench problems) of a set of n_all rows, n of them answered.

    Row i belongs to sets[i % len(sets)]; search: the sets in the order a kept answer is offered to them;
    parse(set, text) -> the set's rule's answer or None; text and ref_output are decoded as the
    reference decodes (skip_special_tokens); row_extra(row) adds a model's own columns before ref_output."""
    from language.synthllm import ground_truth

    slots = {k: list(range(i, n, len(sets))) for i, k in enumerate(sets)}
    filled = dict.fromkeys(sets, 0)
    truth: dict[int, tuple[str, object]] = {}

    def keep(t, ids, i):
        text = t.decode(ids.tolist(), skip_special_tokens=skip_special_tokens)
        for name in search:
            if filled[name] == len(slots[name]):
                continue
            got = parse(name, text)
            if got is None or got == "" or (name == lcb and not CODE.match(got)):
                continue
            filled[name] += 1
            truth[i] = (name, got)
            return True
        return False

    kept = ground_truth(bench, model_dir, prompts, keep, n, bench.name, seed, batch=batch)
    rows, payloads, problems = [None] * n, [None] * n, []
    for name in sets:
        for slot, (c, ids) in zip(slots[name], [(c, ids) for c, ids in kept if truth[c][0] == name]):
            row = dict(cands[c], dataset=name)
            if name == lcb:
                qid = f"synthetic_lcb_{slot}"
                row["ground_truth"] = qid
                problems.append({"question_id": qid, "question_title": f"synthetic {slot}", "platform": "synthetic",
                                 "public_test_cases": json.dumps([{"input": "", "output": "", "testtype": "stdin"}]),
                                 "private_test_cases": private_cases([{"input": "\n", "output": "\n",
                                                                       "testtype": "stdin"}]),
                                 "metadata": "{}"})
            else:
                row["ground_truth"] = str(truth[c][1])
            if row_extra is not None:
                row_extra(row)
            row["ref_output"] = tok.decode(ids.tolist(), skip_special_tokens=skip_special_tokens)
            rows[slot], payloads[slot] = row, ids
    by_id = {p["question_id"]: p for p in problems}
    for k in range(n, n_all):
        row = dict(rows[k % n])
        if row["dataset"] == lcb:
            row["ground_truth"] = qid = f"synthetic_lcb_{k}"
            problems.append(dict(by_id[rows[k % n]["ground_truth"]], question_id=qid, question_title=f"synthetic {k}"))
        rows.append(row)
        payloads.append(payloads[k % n])
    return rows, payloads, problems


def write_problems(ds_dir, problems: list[dict]) -> None:
    lcb = ds_dir / "livecodebench"
    lcb.mkdir(exist_ok=True)
    (lcb / "test.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
