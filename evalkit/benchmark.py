"""The contract between the core and one model folder.

A model folder provides one `Benchmark` subclass instance. The core (runner,
launcher, gather, check, synth) only ever talks to this interface, so adding a
model never touches the core. The methods a model must write are abstract: an
incomplete model fails when the registry loads it, not in the middle of a run.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import KitError


class Dataset(abc.ABC):
    """A validated, opened dataset. Indices are global (0..size-1)."""

    size: int = 0
    index_file: Path | None = None  # the file that lists the samples (val_map.txt), named when n_count exceeds size

    @abc.abstractmethod
    def load(self, index: int) -> Any:
        """Return the preprocessed sample `index` (what make_batch consumes)."""

    def groups(self) -> Sequence[int] | None:
        """The scoring unit of each sample when a metric is computed over groups of samples (BERT: the
        question of each feature, scored from all its features); None: every sample is its own unit.
        An explore probe (evalkit/probe.py) takes whole groups."""
        return None

    @abc.abstractmethod
    def check_available(self, start: int, stop: int) -> None:
        """Raise KitError naming the first missing file in [start, stop).

        A missing file is an error, never a skip: a skip shifts every index after it. The core has
        already checked that [start, stop) lies inside 0..size. Abstract on purpose: a dataset whose
        files were all read when it opened says so explicitly instead of inheriting a silent pass.
        """


class TextIO(abc.ABC):
    """What a text backend needs from an LLM benchmark (Benchmark.text_io)."""

    @abc.abstractmethod
    def request(self, item: Any) -> dict:
        """One element of make_batch's output -> {"prompt": str, "generation": {...}} with the
        generation settings as HF generate() names them (num_beams, max_new_tokens, ...)."""

    @abc.abstractmethod
    def payload(self, text: str, token_ids: list[int] | None, finish_reason: str | None = None,
                item: Any = None) -> np.ndarray:
        """The server's completion -> one element of what postprocess takes: its token ids when
        the server returned them, else `text` tokenised with the checkpoint's tokenizer.
        finish_reason: the API's ("stop": EOS or a stop string ended it; "length": max_tokens);
        item: the make_batch element the request was made from."""


class Benchmark(abc.ABC):
    # --- names -----------------------------------------------------------
    name: str = ""                    # kit name: `make <name>`, `evalkit run <name>`
    mlperf_name: str = ""             # LoadGen mlperf.conf model key
    checker_names: dict[str, str] = {}  # accuracy target ("99", "99.9") -> checker model name
    default_accuracy_target: str = "99"
    # --- dataset facts ------------------------------------------------------
    dataset_size: int = 0             # full validation set size (checker "dataset-size")
    # accuracy target -> its own full set size where it differs (llama3.1-8b "edge": 5,000 samples)
    target_sizes: dict[str, int] = {}
    performance_sample_count: int = 0
    payload_dtype: str = "float32"    # numpy dtype of each response payload
    payload_size: int | None = None   # elements per payload when fixed (resnet 1, bert 768); the core checks it
    token_payload: bool = False       # payload = token ids: LoadGen gets n_tokens = payload length
    default_batch_size: int = 1
    # False: the payload bytes depend on the batch size (DLRM's float sums), so the batch size enters
    # the config hash and partitions run at other batch sizes never merge. True (the default) is a
    # promise the contract test checks: batch 1 and batch B give the same bytes on CPU in fp32.
    batch_invariant: bool = True
    cuda_batch_size: int | None = None   # default on a GPU (sized for one H100/H200); None: default_batch_size
    data_types: tuple[str, ...] = ("fp32", "fp16", "bf16")
    synthetic_n: int = 64             # default size of the synthetic set (DATA=synthetic)
    # `evalkit synth --option KEY=VALUE` keys with their defaults; a value other than the default is
    # passed to synthesize() as a keyword and recorded in the set's SYNTHETIC.json
    synthetic_options: dict[str, Any] = {}
    # True: load_model accepts a comma-separated list of K devices ("cuda:0,cuda:1", or "cpu,cpu" in
    # tests) and splits the model over them (--devices_per_partition K); models that fit one device: False.
    multi_device: bool = False
    # Model options (--option KEY=VALUE) with their defaults: the only keys a run accepts for this
    # model; the resolved values go into the config hash. Another model's options never appear here.
    options: dict[str, Any] = {}

    # --- data ---------------------------------------------------------------
    @abc.abstractmethod
    def open_dataset(self, path: Path, model_path: Path | None = None, options: dict | None = None) -> Dataset:
        """Open the published on-disk layout at `path`; KitError if it is not there.
        `model_path` is for datasets whose features depend on the checkpoint (a tokenizer), `options`
        (the run's resolved model options) for those whose samples do (RetinaNet's preprocess)."""

    def fingerprint(self, dataset_path: Path, model_path: Path) -> dict:
        """Facts about the dataset that change results and are not file contents (an input size read
        from the checkpoint, a generation cap); every file of the dataset dir and the checkpoint is
        identified by content by the core (evalkit/identity.py). Raise KitError naming a missing file."""
        return {}

    # --- model --------------------------------------------------------------
    def torch_dtype(self, data_type: str):
        """DATA_TYPE (fp32/fp16/bf16) -> torch dtype; KitError for one this model does not take."""
        import torch

        table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        if data_type not in self.data_types or data_type not in table:
            raise KitError(f"data type {data_type!r} is not supported by {self.name}; "
                           f"use one of {', '.join(self.data_types)}.")
        return table[data_type]

    def sample_work(self, dataset_path: Path) -> list[int] | None:
        """The cost of each sample (3D-UNet: voxels per case) when samples differ hugely in size:
        partitions are then cut by work, not by count (evalkit/partition.py). None: by count."""
        return None

    @abc.abstractmethod
    def load_model(self, model_path: Path, device: str, data_type: str, options: dict) -> Any:
        """The real model from a checkpoint in its published format, on `device`, in `data_type`."""

    @abc.abstractmethod
    def make_batch(self, samples: Sequence[Any], device: str, data_type: str, options: dict) -> Any:
        """Collate preprocessed samples into the model's input for one forward call."""

    # --- the device data path (evalkit/store.py) ----------------------------------
    def store_sample(self, sample: Any) -> Any:
        """A loaded sample in the compact form kept while LoadGen holds it loaded. Return a torch
        tensor (one shape and dtype for every sample, e.g. a uint8 image) to have samples stored on
        the device and batches gathered there by index (batch_from_store); anything else stays a
        host object and goes through make_batch."""
        return sample

    def batch_from_store(self, x: Any, device: str, data_type: str, options: dict) -> Any:
        """Stored samples gathered into one tensor [B, ...], already on `device` -> the model's
        input. Must equal make_batch of the same samples (tests/test_contract.py checks it)."""
        raise KitError(f"{self.name}: store_sample returns tensors but batch_from_store is not written")

    def forward(self, model: Any, inputs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return model(inputs)

    @abc.abstractmethod
    def postprocess(self, outputs: Any, n: int) -> list[np.ndarray]:
        """Model outputs of a batch -> one payload array (payload_dtype) per sample."""

    # --- hooks for backends (evalkit/backends) -----------------------------------
    def compile_model(self, model: Any, compile_fn) -> Any:
        """`pytorch-compile`: load_model's result with its torch module passed through
        `compile_fn` (torch.compile with the backend's options). Must not modify `model`: it is
        the eager fallback. Override when load_model returns more than a module."""
        import torch

        if not isinstance(model, torch.nn.Module):
            raise KitError(f"{self.name}: load_model returned {type(model).__name__}, not a torch module; "
                           f"override Benchmark.compile_model")
        return compile_fn(model)

    def text_io(self, model_path: Path, options: dict) -> "TextIO":
        """Text-in/text-out backends (an OpenAI-compatible server): the LLM's prompts, generation
        settings and payload encoding. Only LLM benchmarks have one."""
        raise KitError(f"{self.name} has no text interface; text backends (openai) serve LLMs only")

    # --- quantized runs (evalkit/quantize.py, evalkit/calibration.py) ---------------------
    # The built-in quantizer CALIBRATE=true uses when QUANTIZER is not given; None: the model takes
    # none (a plug-in may still be named). The MLPerf calibration list is data: calibration/ beside
    # the model's benchmark.py (calibration.json + the list files).
    default_quantizer: str | None = None

    def quant_module(self, model: Any) -> Any:
        """The torch module of load_model's result that a quantizer transforms."""
        return model

    def with_quant_module(self, model: Any, module: Any) -> Any:
        """load_model's result with its module replaced by `module` (the quantized one)."""
        return module

    def calibration_forward(self, model: Any, inputs: Any) -> None:
        """One calibration pass over make_batch's output (LLMs: the prompt pass, no generation)."""
        self.forward(model, inputs)

    def sample_key(self, dataset: Dataset, index: int) -> str | None:
        """What identifies a sample across the calibration split and the evaluated set (the leak
        check); None: the sha256 of the sample as dataset.load returns it."""
        return None

    # --- accuracy -------------------------------------------------------------
    @abc.abstractmethod
    def score(self, pairs: Iterable[tuple[int, np.ndarray]], dataset_path: Path, n_count: int,
              model_path: Path | None = None) -> dict:
        """Clean (qsl_idx, payload) pairs -> metrics keyed by checker metric name.

        The core (evalkit/scoring.py) has already checked every entry of the log: qsl_idx inside
        0..n_count-1, payload a whole number of payload_dtype (and payload_size elements when
        set), first occurrence kept, log not empty. `model_path` is the run's checkpoint (its
        tokenizer decodes token payloads). Model-specific checks (token ids < vocab) stay here."""

    def score_subset(self, pairs: Iterable[tuple[int, np.ndarray]], dataset_path: Path, indices: Sequence[int],
                     n_count: int, model_path: Path | None = None) -> dict:
        """Metrics over the samples `indices` of 0..n_count-1 only (an explore probe, evalkit/probe.py).
        The default is score() itself, right for a model whose metric aggregates the pairs it is given;
        a model whose score also counts the samples it was not given (BERT: an unanswered question
        scores 0) overrides it. tests/test_explore.py holds every model to it on its synthetic set."""
        return self.score(pairs, dataset_path, n_count, model_path)

    def accuracy_model_path(self, dataset_path: Path, model_path: Path | None = None) -> Path:
        """Checkpoint dir whose tokenizer the dataset/accuracy need: the run's `model_path` when
        given, else the layout's convention (synthetic sibling `model/`, or data/models/<name>
        next to data/dataset/<name>). KitError naming both when neither is there."""
        if model_path is not None:
            if not Path(model_path).is_dir():
                raise KitError(f"checkpoint dir {model_path} for the {self.name} tokenizer does not exist")
            return Path(model_path)
        ds = Path(dataset_path)
        candidates = [ds.parent / "model", ds.parent.parent / "models" / ds.name]
        for c in candidates:
            if c.is_dir():
                return c
        raise KitError(f"no checkpoint dir for the {self.name} tokenizer next to dataset {ds} "
                       f"(looked in {candidates[0]} and {candidates[1]})")

    def write_extras(self, run_dir: Path, merged_log: Path, dataset_path: Path, model_path: Path) -> list[str]:
        """Files the submission checker wants in the accuracy dir besides accuracy.txt (SDXL's sample
        images); check calls it after scoring. Returns what it wrote, for the table."""
        return []

    @abc.abstractmethod
    def accuracy_lines(self, metrics: dict) -> list[str]:
        """Lines of accuracy.txt, as the reference accuracy script prints them (plain numbers)."""

    # --- synthetic ----------------------------------------------------------------
    @abc.abstractmethod
    def synthesize(self, out: Path, n: int, seed: int) -> list[np.ndarray]:
        """Write out/dataset (published layout) and out/model (published checkpoint format).

        Ground truth must be the model's own fp32 batch-1 output; returns those
        payloads, one per sample, so the core can prove an index shift fails.
        """

    @abc.abstractmethod
    def synthetic_reference(self) -> dict[str, float]:
        """Perfect values of the exact metrics on synthetic data (e.g. {"acc": 100.0}); the first
        is the one an index shift must break. Other target metrics (GEN_LEN, ...) take the
        value the ground truth itself scores."""
