"""SQuAD v1.1: dev-v1.1.json -> features as the MLPerf BERT reference builds them, logits ->
answer texts as accuracy-squad.py does, and the official v1.1 EM/F1.

Facts followed (mlperf_facts.md §3, §5): max_seq_length 384, max_query_length 64,
doc_stride 128, whitespace-split documents, wordpieces of each word, the span with
the most context owns a token; n_best 20, max answer length 30, lower-casing; the
predicted wordpiece text is projected back onto the original words; EM/F1 after
SQuAD's answer normalisation, max over the ground truths, unanswered questions 0.
"""
from __future__ import annotations

import collections
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evalkit.errors import KitError

MAX_SEQ_LEN = 384
MAX_QUERY_LEN = 64
DOC_STRIDE = 128
N_BEST = 20
MAX_ANSWER_LEN = 30


@dataclass
class Example:
    qas_id: str
    question: str
    doc_tokens: list[str]
    answers: list[str]


@dataclass
class Feature:
    example_index: int
    input_ids: np.ndarray        # int64 (384,)
    input_mask: np.ndarray
    segment_ids: np.ndarray
    tokens: list[str]
    token_to_orig: dict[int, int]
    max_context: dict[int, bool]


def read_examples(path: Path) -> list[Example]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KitError(f"{path} not found; the BERT dataset dir must hold the SQuAD v1.1 dev-v1.1.json.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KitError(f"cannot read {path}: {e}; re-download dev-v1.1.json.") from None
    if not isinstance(data, dict) or data.get("version") != "1.1" or not isinstance(data.get("data"), list):
        raise KitError(f"{path} is not SQuAD v1.1 (needs \"version\": \"1.1\" and a \"data\" list).")
    return _examples_from_data(data, path)


def _examples_from_data(data: dict, path) -> list[Example]:
    examples = []
    try:
        for article in data["data"]:
            for para in article["paragraphs"]:
                doc_tokens, prev_ws = [], True
                for c in para["context"]:  # whitespace split, as the reference reader does
                    if c in " \t\r\n" or ord(c) == 0x202F:
                        prev_ws = True
                    elif prev_ws:
                        doc_tokens.append(c)
                        prev_ws = False
                    else:
                        doc_tokens[-1] += c
                        prev_ws = False
                for qa in para["qas"]:
                    examples.append(Example(str(qa["id"]), qa["question"], doc_tokens,
                                            [a["text"] for a in qa["answers"]]))
    except (KeyError, TypeError) as e:
        raise KitError(f"{path}: malformed SQuAD entry (missing {e}); re-download dev-v1.1.json.") from None
    return examples


def _tokenize_words(tok, words: list[str]) -> list[list[str]]:
    if not words:
        return []
    enc = tok(words, add_special_tokens=False)["input_ids"]
    return [tok.convert_ids_to_tokens(ids) for ids in enc]


def build_features(examples: list[Example], tok) -> list[Feature]:
    feats: list[Feature] = []
    cls_id, sep_id = tok.convert_tokens_to_ids("[CLS]"), tok.convert_tokens_to_ids("[SEP]")
    questions = _tokenize_words(tok, [e.question for e in examples])
    doc_cache: dict[int, tuple] = {}
    for ei, ex in enumerate(examples):
        query = questions[ei][:MAX_QUERY_LEN]
        key = id(ex.doc_tokens)  # paragraphs share one doc_tokens list: tokenize each once
        if key not in doc_cache:
            sub = _tokenize_words(tok, ex.doc_tokens)
            tok_to_orig, all_doc = [], []
            for wi, pieces in enumerate(sub):
                tok_to_orig += [wi] * len(pieces)
                all_doc += pieces
            doc_cache[key] = (tok_to_orig, all_doc)
        tok_to_orig, all_doc = doc_cache[key]
        max_doc = MAX_SEQ_LEN - len(query) - 3
        spans, start = [], 0
        while start < len(all_doc):
            length = min(len(all_doc) - start, max_doc)
            spans.append((start, length))
            if start + length == len(all_doc):
                break
            start += min(length, DOC_STRIDE)
        for si, (s0, ln) in enumerate(spans):
            tokens = ["[CLS]"] + query + ["[SEP]"]
            segment = [0] * len(tokens)
            t2o, maxc = {}, {}
            for i in range(ln):
                pos = s0 + i
                t2o[len(tokens)] = tok_to_orig[pos]
                maxc[len(tokens)] = _is_max_context(spans, si, pos)
                tokens.append(all_doc[pos])
                segment.append(1)
            tokens.append("[SEP]")
            segment.append(1)
            ids = tok.convert_tokens_to_ids(tokens)
            ids[0], ids[len(query) + 1], ids[-1] = cls_id, sep_id, sep_id
            pad = MAX_SEQ_LEN - len(ids)
            feats.append(Feature(ei, np.array(ids + [0] * pad, np.int64), np.array([1] * len(ids) + [0] * pad, np.int64),
                                 np.array(segment + [0] * pad, np.int64), tokens, t2o, maxc))
    return feats


def _is_max_context(spans, cur: int, pos: int) -> bool:
    """A token belongs to the span where it has the most context on both sides."""
    best, best_score = None, None
    for si, (s0, ln) in enumerate(spans):
        end = s0 + ln - 1
        if pos < s0 or pos > end:
            continue
        score = min(pos - s0, end - pos) + 0.01 * ln
        if best_score is None or score > best_score:
            best, best_score = si, score
    return best == cur


_punct = pre_tok = None


def _basic_tokens(text: str) -> list[str]:
    """BERT's basic tokenizer (clean, lower-case, strip accents, split punctuation) from `tokenizers`."""
    global _punct, pre_tok
    if pre_tok is None:
        from tokenizers import normalizers, pre_tokenizers

        _punct = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
        pre_tok = pre_tokenizers.BertPreTokenizer()
    return [t for t, _ in pre_tok.pre_tokenize_str(_punct.normalize_str(text))]


def final_text(pred: str, orig: str) -> str:
    """Project the de-wordpieced prediction back onto the original words (keeps case/punctuation);
    the original span when the alignment fails."""
    tok_text = " ".join(_basic_tokens(orig))
    start = tok_text.find(pred)
    if start == -1:
        return orig

    def strip_spaces(t):
        chars, m = [], {}
        for i, c in enumerate(t):
            if c != " ":
                m[len(chars)] = i
                chars.append(c)
        return "".join(chars), m

    orig_ns, orig_map = strip_spaces(orig)
    tok_ns, tok_map = strip_spaces(tok_text)
    if len(orig_ns) != len(tok_ns):
        return orig
    tok_to_ns = {v: k for k, v in tok_map.items()}
    end = start + len(pred) - 1
    if start not in tok_to_ns or end not in tok_to_ns:
        return orig
    o0, o1 = orig_map.get(tok_to_ns[start]), orig_map.get(tok_to_ns[end])
    if o0 is None or o1 is None:
        return orig
    return orig[o0:o1 + 1]


def nbest(example: Example, feats: list[tuple[Feature, np.ndarray]]) -> list[tuple[str, float]]:
    """(text, start+end logit) candidates, best first, distinct texts, at most N_BEST."""
    prelim = []
    for f, logits in feats:
        start_l, end_l = logits[:, 0], logits[:, 1]
        starts = np.argsort(-start_l, kind="stable")[:N_BEST]
        ends = np.argsort(-end_l, kind="stable")[:N_BEST]
        for s in starts:
            for e in ends:
                s, e = int(s), int(e)
                if s >= len(f.tokens) or e >= len(f.tokens) or s not in f.token_to_orig or e not in f.token_to_orig:
                    continue
                if not f.max_context.get(s, False) or e < s or e - s + 1 > MAX_ANSWER_LEN:
                    continue
                prelim.append((float(start_l[s]) + float(end_l[e]), f, s, e))
    prelim.sort(key=lambda x: x[0], reverse=True)
    out, seen = [], set()
    for score, f, s, e in prelim:
        if len(out) >= N_BEST:
            break
        piece = " ".join(f.tokens[s:e + 1]).replace(" ##", "").replace("##", "")
        piece = " ".join(piece.strip().split())
        orig = " ".join(example.doc_tokens[f.token_to_orig[s]:f.token_to_orig[e] + 1])
        text = final_text(piece, orig)
        if text in seen:
            continue
        seen.add(text)
        out.append((text, score))
    return out or [("empty", 0.0)]


# --- official SQuAD v1.1 metric ---------------------------------------------------------------
def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(c for c in s if c not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(pred: str, truth: str) -> float:
    p, t = normalize_answer(pred).split(), normalize_answer(truth).split()
    common = collections.Counter(p) & collections.Counter(t)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


def squad_v11(examples: list[Example], predictions: dict[str, str]) -> dict:
    """Exact match and F1 in percent over `examples`; a question without a prediction scores 0."""
    em = f1 = 0.0
    for ex in examples:
        if ex.qas_id not in predictions:
            continue
        pred = predictions[ex.qas_id]
        em += max(float(normalize_answer(pred) == normalize_answer(a)) for a in ex.answers)
        f1 += max(f1_score(pred, a) for a in ex.answers)
    n = len(examples)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}


def read_examples_from(qa: dict) -> Example:
    """One Example from {'context', 'question'}: the same whitespace split as read_examples."""
    tmp = {"version": "1.1", "data": [{"paragraphs": [{"context": qa["context"],
                                                       "qas": [{"id": "x", "question": qa["question"], "answers": []}]}]}]}
    return _examples_from_data(tmp, "<synthetic>")[0]
