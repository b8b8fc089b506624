"""Studies beyond the paper's tables: each module builds its own test data from the synthetic
scenes, and reports on trained runs from the per-sample CSVs that ``diffris evaluate`` writes."""
