"""`transformers serve` that also returns the generated token ids, as vLLM does with
`return_tokens_as_token_ids` (choices[0].logprobs.tokens = ["token_id:N", ...]).

vLLM (the reference's engine) has no CPU wheel that runs here, and `transformers serve` answers
text only; text re-encoded canonically is not always the ids a model generated (a random
synthetic model often writes non-canonical BPE splits), so the kit's token-id path is tested on
the real `transformers serve` (its FastAPI app, model manager and HF generate) with this one
method added. Usage: python tests/serve_ids.py CHECKPOINT_DIR --host H --port P [serve options].
"""
from __future__ import annotations

import sys
import time


def _patch() -> None:
    from fastapi.responses import JSONResponse
    from transformers.cli.serving import completion

    async def _non_streaming(self, request_id, model, processor, model_id, inputs, gen_config, gen_manager,
                             suffix=None):
        text, input_len, generated = await gen_manager.generate_non_streaming(
            model, processor, inputs, gen_config, request_id=request_id)
        ids = [int(i) for i in generated]
        cap = gen_config.max_new_tokens
        finish = "length" if cap is not None and len(ids) >= cap else "stop"
        return JSONResponse({
            "id": request_id, "object": "text_completion", "created": int(time.time()), "model": model_id,
            "choices": [{"index": 0, "text": text + (suffix or ""), "finish_reason": finish,
                         "logprobs": {"tokens": [f"token_id:{i}" for i in ids]}}],
            "usage": {"prompt_tokens": int(input_len), "completion_tokens": len(ids),
                      "total_tokens": int(input_len) + len(ids)}})

    completion.CompletionHandler._non_streaming = _non_streaming
    completion.UNUSED_LEGACY_COMPLETION_FIELDS.discard("logprobs")


if __name__ == "__main__":
    _patch()
    from transformers.cli.transformers import main

    sys.argv = ["transformers", "serve", *sys.argv[1:]]
    main()
