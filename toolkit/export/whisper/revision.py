"""The Whisper export's revision, importable without PyTorch (a cached export of the default
model is found by it before any weight is loaded)."""

# bump when the graphs change for the same weights (3: int8 layer selection, 4: decoder rows
# share their window's cross K/V — beams, 5: one copy of the tied token embedding — the fp32
# decoder gathers columns of the output projection, the int8-cpu one reads its 8-bit blocks)
EXPORT_REVISION = 5
