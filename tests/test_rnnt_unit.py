"""RNN-T specifics: WER equal to jiwer, transcript normalisation, the 15 s manifest filter, the
features' arithmetic, checkpoint migration, greedy decoding as the reference loop does it,
and the one-line payload errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evalkit.errors import KitError
from evalkit.scoring import score
from speech_recognition.rnnt import features as feat
from speech_recognition.rnnt import text
from speech_recognition.rnnt.benchmark import BENCHMARK, CHECKPOINT, MANIFEST, migrate, read_manifest
from speech_recognition.rnnt.model import MAX_SYMBOLS_PER_STEP

jiwer = pytest.importorskip("jiwer")


def test_wer_equals_jiwer():
    rng = np.random.default_rng(0)
    vocab = ["a", "the", "cat", "sat", "on", "mat", "dog", "ran"]
    refs = [" ".join(rng.choice(vocab, rng.integers(1, 12))) for _ in range(40)]
    hyps = [" ".join(rng.choice(vocab, rng.integers(0, 12))) if i % 5 else refs[i] for i in range(40)]
    hyps = [h if h else "a" for h in hyps]  # jiwer rejects empty hypotheses; ours takes them (0 words)
    assert text.wer(hyps, refs) == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
    assert text.word_errors("", "the cat") == (2, 2)
    assert text.word_errors("  the   cat ", "the cat") == (0, 2)


def test_normalize_as_the_manifest_reader():
    assert text.normalize("HE SAID: 'WELL,  I DON'T'...") == "he said 'well i don't'"
    assert text.normalize("Mr. O'NEIL, 42!") == "mr o'neil "  # digits dropped after the strip, as the reference filters
    assert text.normalize("Café & co") == "cafe  co"
    assert text.to_text(text.to_indices("it's a b")) == "it's a b"
    assert text.LABELS[0] == " " and text.LABELS[27] == "'" and text.BLANK == 28


# sha256 of librosa 0.11.0's librosa.filters.mel(sr=16000, n_fft=512, n_mels=80, fmin=0, fmax=8000)
# bytes (float32), what the reference featurizer builds; librosa is not a kit dependency
LIBROSA_MEL_SHA256 = "2676995a34afe980bc0392219c797ddd56c78e1809f84c387577c9e151664cec"


def test_mel_filterbank_bit_equal_to_librosa():
    import hashlib

    assert hashlib.sha256(feat.mel_filterbank().tobytes()).hexdigest() == LIBROSA_MEL_SHA256


def test_mel_filterbank_shape_and_slaney_area():
    fb = feat.mel_filterbank()
    assert fb.shape == (80, 257) and fb.dtype == np.float32 and (fb >= 0).all()
    peaks = fb.argmax(1)
    assert (np.diff(peaks) >= 0).all()  # filters ordered by centre frequency
    # Slaney normalisation: every triangle has unit area in Hz (up to the FFT grid)
    hz_per_bin = 8000 / 256
    area = fb.sum(1) * hz_per_bin
    assert np.median(area) == pytest.approx(1.0, rel=0.05)


def test_features_splice_and_normalise():
    rng = np.random.default_rng(1)
    wav = rng.normal(0, 0.1, 16000 + 123).astype(np.float32)
    x = feat.features(wav)
    assert x.shape == (feat.n_frames(len(wav)), 240) == (34, 240)
    np.testing.assert_allclose(x.mean(0)[:80], 0, atol=1e-5)
    np.testing.assert_allclose(x.std(0, ddof=1)[:80], 1, atol=1e-3)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("rnnt")
    payloads = BENCHMARK.synthesize(out, 4, 0)
    return out, payloads


def test_manifest_filter_keeps_indices(synth):
    out, payloads = synth
    raw = json.loads((out / "dataset" / MANIFEST).read_text())
    kept = read_manifest(out / "dataset")
    assert len(raw) == 5 and len(kept) == 4  # the 15.5 s utterance at position 3 is dropped
    assert raw[3]["original_duration"] > 15
    assert [u["wav"].name for u in kept] == [r["files"][0]["fname"].split("/")[-1] for i, r in enumerate(raw) if i != 3]
    assert [u["transcript"] for u in kept] == [text.normalize(text.to_text(p)) for p in payloads]


def _reference_greedy(model, feats):
    # decoders.py ScriptGreedyDecoder: the prediction step is recomputed at every decision
    enc = model.encoder(feats.unsqueeze(1))[0]
    label, hidden = [], None
    for t in range(enc.shape[0]):
        for _ in range(MAX_SYMBOLS_PER_STEP):
            g, hidden_prime = model.prediction(label[-1] if label else None, hidden)
            k = int(model.joint(enc[t:t + 1], g)[0].argmax())
            if k == model.blank:
                break
            label.append(k)
            hidden = hidden_prime
    return label


def test_checkpoint_migration_and_greedy_decode(synth):
    out, payloads = synth
    ck = torch.load(out / "model" / CHECKPOINT, weights_only=True)["state_dict"]
    assert "joint_net.3.weight" in ck and "audio_preprocessor.featurizer.fb" in ck
    assert "joint.net.3.weight" in migrate(ck) and "audio_preprocessor.featurizer.fb" not in migrate(ck)
    ddp = {"module." + k.replace("joint_net.3.", "joint_net.2."): v for k, v in ck.items()}
    assert set(migrate(ddp)) == set(migrate(ck))
    net = BENCHMARK.load_model(out / "model", "cpu", "fp32", {})
    assert net.encoder.post_rnn.lstm.num_layers == 3 and net.encoder.stack == 2
    ds = BENCHMARK.open_dataset(out / "dataset")
    with torch.inference_mode():
        for i, p in enumerate(payloads):
            assert _reference_greedy(net, torch.from_numpy(ds.load(i))) == p.tolist()


def test_stack_time_pads_odd_lengths():
    from speech_recognition.rnnt.model import Encoder

    enc = Encoder(4, 3, 1, 1, 2)
    x = torch.randn(5, 1, 4)
    with torch.no_grad():
        assert enc(x).shape == (1, 3, 3)


def test_score_names_bad_payloads(synth):
    out, payloads = synth
    n = len(payloads)
    m = score(BENCHMARK, ((i, p.tobytes()) for i, p in enumerate(payloads)), out / "dataset", n)
    assert m["WER"] == 100.0 and m["wer"] == 0.0
    assert BENCHMARK.accuracy_lines(m) == ["Word Error Rate: 0.0%, accuracy=100.0%"]
    bad = [p.copy() for p in payloads]
    bad[1][0] = 29
    with pytest.raises(KitError, match="qsl_idx 1: the payload holds"):
        score(BENCHMARK, ((i, p.tobytes()) for i, p in enumerate(bad)), out / "dataset", n)
    # shifted transcripts: WER above 100 % floors the checker figure at 0, the line still parses
    m = score(BENCHMARK, ((i, payloads[(i + 1) % n].tobytes()) for i in range(n)), out / "dataset", n)
    assert m["WER"] < 50
    from evalkit.targets import parse_accuracy_txt
    assert parse_accuracy_txt(BENCHMARK.accuracy_lines(m)[0], "WER") == [m["WER"]]


def test_missing_wav_is_an_error(synth, tmp_path):
    import shutil
    out, _ = synth
    ds = shutil.copytree(out / "dataset", tmp_path / "ds")
    victim = read_manifest(ds)[2]["wav"]
    victim.unlink()
    d = BENCHMARK.open_dataset(ds)
    with pytest.raises(KitError, match="qsl_idx 2"):
        d.check_available(0, 4)
    with pytest.raises(KitError, match="missing"):
        d.load(2)


@pytest.mark.parametrize("fname", ["../outside.wav", "dev-clean-wav/../../outside.wav", "/etc/outside.wav"])
def test_manifest_path_leaving_the_dataset_is_refused(tmp_path, fname):
    """A manifest `fname` is a path inside the dataset dir: '..' and absolute paths are refused
    in one line naming the manifest and the entry, before any file is opened."""
    entry = {"transcript": "A B", "original_duration": 1.0, "original_num_samples": 16000,
             "files": [{"fname": "dev-clean-wav/a.wav", "speed": 1, "num_samples": 16000}]}
    bad = json.loads(json.dumps(entry))
    bad["files"][0]["fname"] = fname
    (tmp_path / MANIFEST).write_text(json.dumps([entry, bad]))
    with pytest.raises(KitError, match=rf"{MANIFEST} entry 1: .*{fname.split('/')[-1]}") as e:
        read_manifest(tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("how", ["truncate", "garbage", "empty"])
def test_bad_wav_is_found_before_the_model_loads(synth, tmp_path, how):
    """check_available (the core calls it before the model loads) reads each WAV's header: a cut,
    foreign or empty file is refused there, naming the file and its qsl_idx."""
    import shutil
    out, _ = synth
    ds = shutil.copytree(out / "dataset", tmp_path / "ds")
    victim = read_manifest(ds)[1]["wav"]
    data = victim.read_bytes()
    victim.write_bytes({"truncate": data[:len(data) // 2], "garbage": b"\x17" * len(data), "empty": b""}[how])
    d = BENCHMARK.open_dataset(ds)
    d.check_available(2, 4)
    with pytest.raises(KitError, match=rf"{victim.name} \(qsl_idx 1\) (is truncated|is not a RIFF|is empty)"):
        d.check_available(0, 4)
