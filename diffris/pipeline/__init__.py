"""The pipeline around the stages: the job list from params.yaml (``jobs``: paths, commands,
feature caches, logs and benchmark files), ``dvc.yaml``, ``studies/dvc.yaml`` and ``zoo/dvc.yaml``
(``dvc_stages``, ``dvc_backbones``, ``diffris export-dvc``), the paper-scale plan (``plan``), the workflow's config
check (``params_check``) and the cost table of a build's jobs (``costs``, ``diffris report-costs``).

It is the last stage: it names every other stage's jobs, as the Snakefile does, and nothing
imports it but the workflow. What the stages themselves need to name their jobs (the runs and
evaluations the tables ask for, their seeds) lives in ``diffris.config``.

Imports: the basics and every stage.
"""
