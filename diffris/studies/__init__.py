"""Studies beyond the paper's tables: each module builds its own test data from the synthetic
scenes, and reports on trained runs from the per-sample CSVs that ``diffris evaluate`` writes.

``plan`` names the studies' jobs (trainings reused from the tables' runs, evaluations, commands)
in the vocabulary of ``diffris.config`` (``Run``, ``Evaluation``, ``seeds``); the pipeline turns
them into Snakemake inputs and DVC stages, so this package never imports the pipeline.

Imports: the basics and every stage before it (data to report).
"""
