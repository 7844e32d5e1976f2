"""The MLPerf RNN-T (reference pytorch/model_separable_rnnt.py, rnn.py, decoders.py) in plain PyTorch.

encoder: LSTM pre_rnn (240 -> H, 2 layers) -> stack time x2 (pad to even, concatenate pairs of
frames) -> LSTM post_rnn (2H -> H, 3 layers); prediction: Embedding(28, P) + LSTM (P -> P, 2
layers), input zeros for the start symbol; joint: Linear(H + P -> J) -> ReLU -> Linear(J -> 29)
on [encoder frame | prediction output]. Greedy decoding as ScriptGreedyDecoder: per encoder
frame, up to 30 symbols while the argmax is not blank; the prediction state advances only on
emitted symbols.

Parameter names are the reference module paths (encoder.pre_rnn.lstm.weight_ih_l0, ...,
joint.net.0.weight, joint.net.3.weight); sizes are read from the checkpoint's shapes.
"""
from __future__ import annotations

import torch
from torch import nn

MAX_SYMBOLS_PER_STEP = 30


class LstmDrop(nn.Module):
    def __init__(self, n_in: int, n_hidden: int, n_layers: int):
        super().__init__()
        self.lstm = nn.LSTM(input_size=n_in, hidden_size=n_hidden, num_layers=n_layers)

    def forward(self, x, h=None):
        return self.lstm(x, h)


class Encoder(nn.Module):
    def __init__(self, n_in: int, n_hidden: int, pre_layers: int, post_layers: int, stack: int):
        super().__init__()
        self.stack = stack
        self.pre_rnn = LstmDrop(n_in, n_hidden, pre_layers)
        self.post_rnn = LstmDrop(stack * n_hidden, n_hidden, post_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (T, B, F) -> (B, ceil(T / stack), H)."""
        x, _ = self.pre_rnn(x)
        t, b, h = x.shape
        pad = (-t) % self.stack
        if pad:
            x = torch.cat([x, x.new_zeros(pad, b, h)], dim=0)
        x = x.transpose(0, 1).reshape(b, (t + pad) // self.stack, h * self.stack).transpose(0, 1)
        x, _ = self.post_rnn(x)
        return x.transpose(0, 1)


class Prediction(nn.Module):
    def __init__(self, vocab: int, n_hidden: int, n_layers: int):
        super().__init__()
        self.n_hidden = n_hidden
        self.embed = nn.Embedding(vocab - 1, n_hidden)
        self.dec_rnn = LstmDrop(n_hidden, n_hidden, n_layers)

    def forward(self, label: int | None, state):
        if label is None:  # start of sequence: a zero input, as the reference
            y = self.embed.weight.new_zeros(1, 1, self.n_hidden)
        else:
            y = self.embed(torch.tensor([[label]], device=self.embed.weight.device)).transpose(0, 1)
        g, state = self.dec_rnn(y, state)
        return g[0], state  # (1, P)


class Joint(nn.Module):
    def __init__(self, vocab: int, pred_hidden: int, enc_hidden: int, joint_hidden: int):
        super().__init__()
        # indices as in the reference's Sequential (Linear, ReLU, Dropout, Linear): names net.0 / net.3
        self.net = nn.Sequential(nn.Linear(pred_hidden + enc_hidden, joint_hidden), nn.ReLU(), nn.Identity(),
                                 nn.Linear(joint_hidden, vocab))

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([f, g], dim=-1))


class RNNT(nn.Module):
    def __init__(self, dims: dict):
        super().__init__()
        self.blank = dims["vocab"] - 1
        self.encoder = Encoder(dims["features"], dims["enc_hidden"], dims["pre_layers"], dims["post_layers"],
                               dims["stack"])
        self.prediction = Prediction(dims["vocab"], dims["pred_hidden"], dims["pred_layers"])
        self.joint = Joint(dims["vocab"], dims["pred_hidden"], dims["enc_hidden"], dims["joint_hidden"])

    def greedy_decode(self, feats: torch.Tensor, margins: list | None = None) -> list[int]:
        """feats (T, 240) of one utterance -> label indices. `margins` collects the gap between
        the two best joint outputs at every decision (synthetic data keeps clear of near-ties)."""
        enc = self.encoder(feats.unsqueeze(1))[0]  # (T', H)
        labels: list[int] = []
        state = None
        g, new_state = self.prediction(None, state)
        for t in range(enc.shape[0]):
            f = enc[t:t + 1]
            for _ in range(MAX_SYMBOLS_PER_STEP):
                logits = self.joint(f, g)[0]
                if margins is not None:
                    top = torch.topk(logits.float(), 2).values
                    margins.append(float(top[0] - top[1]))
                k = int(logits.argmax())
                if k == self.blank:
                    break
                labels.append(k)
                state = new_state
                g, new_state = self.prediction(k, state)
        return labels


def dims_from_state(state: dict) -> dict:
    """Model sizes from a migrated state dict's shapes (KeyError when a tensor is missing)."""
    def layers(prefix):
        return len([k for k in state if k.startswith(prefix + ".lstm.weight_ih_l")])

    enc_hidden = state["encoder.pre_rnn.lstm.weight_hh_l0"].shape[1]
    return {"features": state["encoder.pre_rnn.lstm.weight_ih_l0"].shape[1], "enc_hidden": enc_hidden,
            "pre_layers": layers("encoder.pre_rnn"), "post_layers": layers("encoder.post_rnn"),
            "stack": state["encoder.post_rnn.lstm.weight_ih_l0"].shape[1] // enc_hidden,
            "pred_hidden": state["prediction.embed.weight"].shape[1], "pred_layers": layers("prediction.dec_rnn"),
            "joint_hidden": state["joint.net.0.weight"].shape[0], "vocab": state["joint.net.3.weight"].shape[0]}
