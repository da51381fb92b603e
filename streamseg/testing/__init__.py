"""For tests, benchmarks and trying streamseg offline (not used by a run): synthetic street scenes with a known
class for every pixel (:mod:`.scenes`), live synthetic cameras (:mod:`.streams`) and tiny random-weight models
built from real configs (:mod:`.models`; ``python -m streamseg.testing models DIR``)."""
