"""The harmony prompt format of gpt-oss, rendered here from its published rules (openai-harmony's
format guide and the gpt-oss checkpoint's chat template). The `openai-harmony` package cannot serve:
it downloads its o200k_harmony vocabulary at first use (tried: "error downloading or loading vocab
file" offline), so the kit renders the text and tokenises it with the checkpoint's own tokenizer,
whose added special tokens are harmony's.

A conversation is a run of messages `<|start|>{role}<|message|>{content}<|end|>`; the prompt ends
with `<|start|>assistant`, after which the model writes `<|channel|>analysis<|message|>...<|end|>`
(its reasoning), `<|start|>assistant<|channel|>final<|message|>...` and `<|return|>`.
The system message's content is, in sections separated by a blank line:
  "{model identity}\\nKnowledge cutoff: {cutoff}[\\nCurrent date: {date}]",
  "Reasoning: {low|medium|high}",
  "# Valid channels: analysis, commentary, final. Channel must be included for every message."
The developer message's content is "# Instructions\\n\\n{instructions}". The MLPerf reference ships
its prompts already rendered and tokenised (`input_tokens`), with reasoning effort high for the
accuracy set and low for the performance set; the kit renders only when it makes a synthetic set."""
from __future__ import annotations

START, END, MESSAGE, CHANNEL, RETURN, CALL, CONSTRAIN = (
    "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>", "<|constrain|>")
START_OF_TEXT, END_OF_TEXT = "<|startoftext|>", "<|endoftext|>"
# o200k_harmony's special tokens in the order of their ids (199998 <|startoftext|> ... 200012 <|call|>)
SPECIAL = (START_OF_TEXT, END_OF_TEXT, RETURN, CONSTRAIN, CHANNEL, START, END, MESSAGE, CALL)
IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
CUTOFF = "2024-06"
CHANNELS = ("analysis", "commentary", "final")
EFFORTS = ("low", "medium", "high")


def system_content(effort: str, *, date: str | None = None, identity: str = IDENTITY, cutoff: str = CUTOFF) -> str:
    if effort not in EFFORTS:
        raise ValueError(f"reasoning effort {effort!r}: one of {', '.join(EFFORTS)}")
    head = f"{identity}\nKnowledge cutoff: {cutoff}" + (f"\nCurrent date: {date}" if date else "")
    return (f"{head}\n\nReasoning: {effort}\n\n"
            f"# Valid channels: {', '.join(CHANNELS)}. Channel must be included for every message.")


def message(role: str, content: str, channel: str | None = None) -> str:
    return f"{START}{role}" + (f"{CHANNEL}{channel}" if channel else "") + f"{MESSAGE}{content}{END}"


def render_prompt(user: str, effort: str, *, instructions: str | None = None, date: str | None = None) -> str:
    """system [+ developer] + user, then the assistant's turn opened (the generation prompt)."""
    text = message("system", system_content(effort, date=date))
    if instructions:
        text += message("developer", f"# Instructions\n\n{instructions}")
    return text + message("user", user) + f"{START}assistant"


def prompt_ids(tok, user: str, effort: str, **kw) -> list[int]:
    """The rendered prompt in the checkpoint tokenizer's ids (its special tokens are harmony's; no
    BOS is added: harmony prompts start with <|start|>)."""
    return list(tok(render_prompt(user, effort, **kw), add_special_tokens=False)["input_ids"])
