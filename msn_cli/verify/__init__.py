"""``msn verify``: prove that a converted folder computes what the original network computes.

One module per check, each a function of one :class:`VerifyContext`, declared in order in
:data:`msn_cli.verify.run.CHECKS`: ``files``, ``loading``, ``config``, ``parity``,
``preprocessing``, ``golden``, ``image``, ``against``. :func:`verify_folder` runs them and
returns a :class:`VerifyReport`; :func:`record_in_manifest` stores it in the folder.
"""

from msn_cli.verify.context import VerifyContext, VerifyOptions
from msn_cli.verify.report import CheckResult, LayerStat, VerifyReport, record_in_manifest
from msn_cli.verify.run import CHECKS, verify_folder

__all__ = ["CHECKS", "CheckResult", "LayerStat", "VerifyContext", "VerifyOptions", "VerifyReport",
           "record_in_manifest", "verify_folder"]
