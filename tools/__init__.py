"""Tooling for the workbook's maintainers, kept out of the installed package.

`python -m tools` regenerates the notebooks' stored outputs, writes the student
edition and replays JupyterLab's "Run All"; see `tools.workbook`.
"""
