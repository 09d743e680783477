"""``msn fewshot``: MSN's low-shot evaluation (``logistic_eval.py``) on the user's own images.

``data`` (folders, split files, sampled shots, one bounded image), ``model`` (a folder, a Hub
id or an original checkpoint, each giving the pre-norm cls feature), ``features`` (the
streamed, parallel feature pass), ``store`` (the feature cache), ``classifier`` (row
normalisation and the logistic regression) and ``run`` (the protocol, end to end). Nothing here
imports Typer or Rich.
"""

from msn_cli.fewshot.run import FewshotReport, Options, fewshot

__all__ = ["FewshotReport", "Options", "fewshot"]
