"""What a live view may send the model while a run goes: text prompts (``POST /prompt``) and clicks
(``POST /point``). Each request is checked here, on the viewer's thread, and handed to the model's thread-safe
control (:class:`~streamseg.roles.PromptControl`, :class:`~streamseg.roles.PointControl`), which applies it at
the next batch or frame. The HTTP server only routes; it never touches the model."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from streamseg.errors import InputError
from streamseg.roles import PointControl, PromptControl

_USAGE = {
    "/prompt": 'send JSON: {"prompt": "person, red car"}',
    "/point": 'send JSON: {"x": 320, "y": 180, "source": 0, "remove": false}',
}
_ABSENT = {"/prompt": "this model takes no text prompts", "/point": "this model takes no points"}


@dataclass
class Answer:
    """What a control request gets back: an HTTP status, a message and more JSON fields."""

    code: int
    message: str
    more: dict


@dataclass
class Controls:
    """The model's controls a live view reaches (``None``: the model takes no such input), and how many sources
    a click may name."""

    prompts: PromptControl | None = None
    points: PointControl | None = None
    sources: int = 1

    @staticmethod
    def routes() -> tuple[str, ...]:
        return tuple(_USAGE)

    def stats(self) -> dict:
        """What ``/stats`` adds: the prompts in use and how often they changed."""
        if self.prompts is None:
            return {}
        return {"prompts": list(self.prompts.prompts), "prompt_changes": self.prompts.changes}

    def apply(self, route: str, data: object) -> Answer:
        """Hand a request's JSON body to the model; a refusal is a 400 with the reason, never an exception."""
        control = self.prompts if route == "/prompt" else self.points
        if control is None:
            return Answer(404, _ABSENT[route], {})
        try:
            message, more = (self._prompt if route == "/prompt" else self._point)(control, data)
        except InputError as exc:  # what the model refused: its own words
            return Answer(400, str(exc), {})
        except (ValueError, TypeError, KeyError):  # not the JSON asked for
            return Answer(400, _USAGE[route], {})
        return Answer(200, message, more)

    @staticmethod
    def usage(route: str) -> str:
        return _USAGE[route]

    def _prompt(self, control: PromptControl, data) -> tuple[str, dict]:
        if not isinstance(data, dict) or not isinstance(data["prompt"], str):
            raise TypeError
        prompts = control.set_prompts(data["prompt"])
        return f"segmenting: {', '.join(prompts)}", {"prompts": list(prompts)}

    def _point(self, control: PointControl, data) -> tuple[str, dict]:
        if not isinstance(data, dict):
            raise TypeError
        x, y, source = data["x"], data["y"], data.get("source", 0)
        for name, value in (("x", x), ("y", y)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a pixel coordinate: a number, 0 or more (got {json.dumps(value)[:40]})")
        if isinstance(source, bool) or not isinstance(source, int) or not 0 <= source < self.sources:
            raise InputError(f"source must be a source number from 0 to {self.sources - 1} (got {json.dumps(source)[:40]})")
        if not isinstance(data.get("remove", False), bool):
            raise InputError("remove must be true or false")
        x, y = float(x), float(y)
        (control.remove_point if data.get("remove") else control.add_point)(x, y, source)
        return f"{'removing the object at' if data.get('remove') else 'tracking'} {x:g},{y:g}", {}
