"""One head per model family, each implementing :class:`streamseg.models.heads.base.Head`: semantic logits
(:mod:`.semantic`), mask classification (:mod:`.universal`), text prompts (:mod:`.prompts`) and click to track
(:mod:`.point_tracking`)."""
