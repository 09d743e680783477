"""``export``: back to a checkpoint that the original MSN training code resumes from.

The original resume path (``load_checkpoint`` in facebookresearch/msn ``src/msn_train.py``,
facts in ``../shared/msn-facts.md``) reads ``epoch``, loads ``encoder`` and ``target_encoder``
strictly (projection head ``fc.*`` included; keys with ``module.`` when the resuming run has
``world_size > 1``), sets ``prototypes`` and loads ``opt`` into the AdamW its ``init_opt``
builds: three parameter groups in a fixed order. Released files lack ``encoder``, ``opt`` and
``epoch``; a converted or Hub folder lacks the head and the prototypes too.

Sources: a checkpoint file (released or training; a released name or URL is fetched first),
or a ``ViTMSNModel`` folder. As everywhere in msn, an :class:`ExportPlan` (every tensor of the
output with its origin, the optimizer groups, the numbers) is built and checked before any byte
is written; ``--dry-run`` shows it. The file is written beside OUT and renamed into place once
read back and compared with the plan.

What the output does not carry: optimizer moments (``opt`` is the state of an AdamW before its
first step: the moments start at zero) and schedule positions (the original code fast-forwards
its learning-rate, weight-decay, momentum and sharpening schedules by ``epoch`` epochs; with
the default ``epoch`` 0 they restart from their beginning, which is what continuing on new
data wants).

The modules, in the order the export runs: :mod:`.backbone` (the networks of a checkpoint
file), :mod:`.folder` (the backbone of a ``ViTMSNModel`` folder, or of a Hub repo),
:mod:`.head` (the projection head and prototypes), :mod:`.optimizer` (the optimizer state and
the bookkeeping numbers), :mod:`.plan` (all of it in one :class:`ExportPlan`) and
:mod:`.write` (the file, and the read-back).
"""

from msn_cli.conversion.export.folder import resolve_export_source
from msn_cli.conversion.export.head import Head, HeadOptions
from msn_cli.conversion.export.plan import ExportPlan, plan_export
from msn_cli.conversion.export.write import ExportResult, export

__all__ = ["ExportPlan", "ExportResult", "Head", "HeadOptions", "export", "plan_export",
           "resolve_export_source"]
