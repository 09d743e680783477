"""msn: convert Meta's original MSN ViT checkpoints into Hugging Face transformers models.

The library API: what each command does, as typed functions that return data::

    from msn_cli import convert_checkpoint, inspect_checkpoint, resolve_source, verify_folder

    src = resolve_source("vits16")                     # a released name, a path or a URL
    report = inspect_checkpoint(src)                   # report.plan.arch, report.to_dict()
    result = convert_checkpoint(src, "vit-msn-small")  # writes the folder, then verifies it
    assert result.verify["passed"]
    check = verify_folder("vit-msn-small")             # VerifyReport: .passed, .checks, .layers

The conversion function is ``convert_checkpoint`` (the name ``convert`` is the submodule
:mod:`msn_cli.conversion.convert`, which would shadow a function of that name). Long steps take
``progress=callable(stage, done, total)``. Failures raise :class:`MsnError` subclasses
(``message``, ``hint``, ``exit_code``).

Names are imported on first use, so ``import msn_cli`` loads neither torch, transformers, Typer
nor Rich. Where each public name lives is written once, as the ``if TYPE_CHECKING:`` imports
below: a type checker reads them as the imports they are, and at run time :func:`__getattr__`
reads them from this file (with :mod:`ast`, as scientific-python's lazy_loader reads a stub).
``__all__`` names them again because type checkers take a renamed import
(``convert as convert_checkpoint``) as public only from a literal ``__all__``.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Architecture",
    "BatchItem",
    "CachedFile",
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "ConversionPlan",
    "ConvertResult",
    "ExportPlan",
    "ExportResult",
    "FolderError",
    "Inferred",
    "InspectReport",
    "Known",
    "MappingError",
    "MsnError",
    "NetworkError",
    "OutputExistsError",
    "ProgressFn",
    "Provenance",
    "PushResult",
    "ResolvedSource",
    "RunConfig",
    "RunReport",
    "UsageError",
    "VerificationFailed",
    "VerifyReport",
    "__version__",
    "build_plan",
    "convert_all",
    "convert_checkpoint",
    "export_checkpoint",
    "fetch",
    "fetch_many",
    "infer_architecture",
    "inspect_checkpoint",
    "inspect_run",
    "load_checkpoint",
    "plan_export",
    "push_folder",
    "read_run_config",
    "resolve_source",
    "verify_folder",
]

if TYPE_CHECKING:  # the public API: read by type checkers, and by _public() at run time
    from msn_cli.conversion.batch import BatchItem as BatchItem
    from msn_cli.conversion.batch import convert_all as convert_all
    from msn_cli.conversion.convert import ConvertResult as ConvertResult
    from msn_cli.conversion.convert import convert as convert_checkpoint
    from msn_cli.conversion.export import ExportPlan as ExportPlan
    from msn_cli.conversion.export import ExportResult as ExportResult
    from msn_cli.conversion.export import export as export_checkpoint
    from msn_cli.conversion.export import plan_export as plan_export
    from msn_cli.conversion.inspect import InspectReport as InspectReport
    from msn_cli.conversion.inspect import inspect_checkpoint as inspect_checkpoint
    from msn_cli.conversion.plan import ConversionPlan as ConversionPlan
    from msn_cli.conversion.plan import build_plan as build_plan
    from msn_cli.conversion.provenance import Known as Known
    from msn_cli.conversion.provenance import Provenance as Provenance
    from msn_cli.errors import CheckpointError as CheckpointError
    from msn_cli.errors import ConfigError as ConfigError
    from msn_cli.errors import FolderError as FolderError
    from msn_cli.errors import MappingError as MappingError
    from msn_cli.errors import MsnError as MsnError
    from msn_cli.errors import NetworkError as NetworkError
    from msn_cli.errors import OutputExistsError as OutputExistsError
    from msn_cli.errors import UsageError as UsageError
    from msn_cli.errors import VerificationFailed as VerificationFailed
    from msn_cli.original.architecture import Architecture as Architecture
    from msn_cli.original.checkpoint import Checkpoint as Checkpoint
    from msn_cli.original.checkpoint import Inferred as Inferred
    from msn_cli.original.checkpoint import infer_architecture as infer_architecture
    from msn_cli.original.checkpoint import load_checkpoint as load_checkpoint
    from msn_cli.original.runconfig import RunConfig as RunConfig
    from msn_cli.original.runconfig import read_run_config as read_run_config
    from msn_cli.original.runfolder import RunReport as RunReport
    from msn_cli.original.runfolder import inspect_run as inspect_run
    from msn_cli.progress import ProgressFn as ProgressFn
    from msn_cli.transfer.download import CachedFile as CachedFile
    from msn_cli.transfer.download import fetch as fetch
    from msn_cli.transfer.download import fetch_many as fetch_many
    from msn_cli.transfer.push import PushResult as PushResult
    from msn_cli.transfer.push import push_folder as push_folder
    from msn_cli.transfer.sources import ResolvedSource as ResolvedSource
    from msn_cli.transfer.sources import resolve_source as resolve_source
    from msn_cli.verify import VerifyReport as VerifyReport
    from msn_cli.verify import verify_folder as verify_folder


@functools.cache
def _public() -> dict[str, tuple[str, str]]:
    """Public name -> (module, attribute), from the ``if TYPE_CHECKING:`` imports above."""
    import ast

    with open(__file__, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    block = next(node for node in tree.body if isinstance(node, ast.If)
                 and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
    return {alias.asname or alias.name: (str(node.module), alias.name)
            for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _public()[name]
    except KeyError:
        raise AttributeError(f"module 'msn_cli' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
