"""Studies: analyses of trained runs beyond the paper's tables and figures, each a library module
with its own ``diffris`` sub-command (e.g. ``diffris.studies.attention``: where the model looks)."""
