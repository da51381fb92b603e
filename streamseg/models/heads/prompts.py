"""Text prompts: ``--prompt "person, red car"`` with a CLIPSeg model, each prompt a class named by its text.

A pixel takes the prompt with the highest probability when that probability is at least the
threshold (``--prompt-threshold``, default 0.5), else no segment (-1). Downstream it is a
semantic model: styles, legend, ``--keep``, JSON (label = the prompt), masks, ``--smooth``.

Faster than the reference forward (``CLIPSegForImageSegmentation(input_ids, pixel_values)``
with each frame repeated once per prompt): the text features are computed once per prompt set
and cached; the vision encoder runs once per frame (batched over frames and sources); only
the light decoder runs per (frame, prompt), on the encoder's activations repeated per prompt.
The logits are the reference's (the tests compare the labels).

The prompt set can be replaced while a run goes (:meth:`PromptHead.set_prompts`, from any
thread: the live view's ``POST /prompt``); it applies from the next batch on.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence

import numpy as np
import torch

from streamseg.config import MAX_PROMPTS, parse_prompts
from streamseg.errors import InputError, short_message

from .semantic import SemanticHead

log = logging.getLogger(__name__)

class PromptHead(SemanticHead):
    """CLIPSeg as a semantic head whose classes are the prompts (``prompts`` and ``threshold`` as
    :class:`~streamseg.config.ModelConfig` checked them) (plus a constant "no segment" channel at the
    threshold's logit, so that the argmax gives -1 where no prompt reaches the threshold)."""

    def __init__(self, model: torch.nn.Module, tokenizer, *, prompts: Sequence[str], threshold: float = 0.5,
                 name: str = "", smooth: float = 0.0) -> None:
        super().__init__(model, id2label={}, num_labels=MAX_PROMPTS, name=name, smooth=smooth)
        self.tokenizer = tokenizer
        self.threshold = threshold
        self._void_logit = math.log(threshold / (1.0 - threshold))
        self._lock = threading.Lock()
        self._pending: tuple[str, ...] | None = None
        self.prompts: tuple[str, ...] = ()
        self._text: torch.Tensor | None = None  # (P, projection_dim) text features of `prompts`
        self.changes = 0
        self._use(tuple(prompts))  # parsed and checked by ModelConfig

    # -- prompts ----------------------------------------------------------------------------------
    @property
    def prompt_control(self) -> PromptHead:
        return self  # the live view's text box: set_prompts, prompts, changes

    def set_prompts(self, text: str | Sequence[str]) -> tuple[str, ...]:
        """Replace the prompt set from the next batch on (any thread); the parsed set. Raises InputError.

        Checked here, on the caller's thread, as far as the model will read it (a prompt longer than the text
        encoder reads is cut to what it reads, with a warning), so that what is accepted cannot fail later."""
        prompts = parse_prompts(text)
        self._tokens(prompts)
        with self._lock:
            self._pending = prompts
        log.warning("prompts changed to: %s", ", ".join(prompts))
        return prompts

    @property
    def max_tokens(self) -> int:
        """Tokens the text encoder reads at most (its position embeddings), start and end included."""
        config = self.eager_model.config.text_config
        return int(getattr(config, "max_position_embeddings", 77))

    def _tokens(self, prompts: tuple[str, ...], *, warn: bool = True) -> dict:
        """The prompts tokenised as the text encoder reads them: each cut to :attr:`max_tokens`, with one warning
        naming a prompt that was cut. Raises InputError when the tokenizer cannot read one."""
        limit = self.max_tokens
        try:
            lengths = [len(ids) for ids in self.tokenizer(list(prompts))["input_ids"]]
            tokens = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=limit,
                                    return_tensors="pt")
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(f"--prompt: this model's tokenizer cannot read it ({short_message(exc)})") from exc
        for prompt, n in zip(prompts, lengths):
            if n > limit and warn:
                log.warning("prompt %r is longer than the model reads (%d tokens, at most %d): its first %d are used",
                            prompt if len(prompt) <= 40 else prompt[:40] + "...", n, limit, limit)
        return tokens

    def _use(self, prompts: tuple[str, ...], *, warn: bool = True) -> None:
        model = self.eager_model
        device = next(model.parameters()).device
        tokens = self._tokens(prompts, warn=warn)
        with torch.inference_mode():
            text = model.clip.get_text_features(input_ids=tokens["input_ids"].to(device),
                                                attention_mask=tokens["attention_mask"].to(device)).pooler_output
        self._text, self.prompts = text, prompts
        self.id2label = dict(enumerate(prompts))
        self._ema = None  # the classes changed: smoothing starts again

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None and pending != self.prompts:
            self._use(pending, warn=False)  # set_prompts warned when it accepted them
            self.changes += 1

    # -- the forward ------------------------------------------------------------------------------
    def _run(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, P + 1, h, w)``: each prompt's, then the threshold's (no segment)."""
        self._apply_pending()
        model = self.eager_model
        b, p = pixel_values.shape[0], len(self.prompts)
        vision = model.clip.get_image_features(pixel_values=pixel_values, output_hidden_states=True)
        activations = [vision.hidden_states[i + 1].repeat_interleave(p, dim=0) for i in model.extract_layers]
        conditional = self._text.to(pixel_values.dtype).repeat(b, 1)  # frame-major: (frame 0: prompt 0..P-1), ...
        logits = model.decoder(activations, conditional).logits
        logits = logits.reshape(b, p, *logits.shape[-2:])
        void = logits.new_full((b, 1, *logits.shape[-2:]), self._void_logit)
        return torch.cat([logits, void], dim=1)

    def label_tensors(self, logits: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        void = logits.shape[1] - 1
        return [torch.where(t == void, -1, t) for t in super().label_tensors(logits, sizes)]

    def _host(self, labels: torch.Tensor) -> np.ndarray:
        return labels.to(torch.int16).cpu().numpy()  # -1: no segment


def load_prompt_head(name: str, hub: dict, config, device: torch.device, dtype: torch.dtype) -> PromptHead:
    """The :class:`PromptHead` of a CLIPSeg model; a one-line error for CLIPSeg without ``--prompt``."""
    from streamseg.errors import ModelLoadError

    if not config.prompts:
        raise ModelLoadError(f"model {config.name!r} segments what it is told: give --prompt \"person, car\"")
    if config.compile:
        raise InputError("--compile applies to models with fixed classes; not to --prompt")
    from transformers import AutoTokenizer, CLIPSegForImageSegmentation

    try:
        model = CLIPSegForImageSegmentation.from_pretrained(name, **hub)
        tokenizer = AutoTokenizer.from_pretrained(name, **hub)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model {name!r} could not be loaded with its tokenizer: "
                             f"{short_message(exc, 200)}") from exc
    model = model.to(device=device, dtype=dtype).eval()
    return PromptHead(model, tokenizer, prompts=config.prompts, threshold=config.prompt_threshold, name=config.name,
                      smooth=config.smooth)
