"""msn: convert Meta's original MSN ViT checkpoints into Hugging Face transformers models.

The library API: what each command does, as typed functions that return data::

    from msn_cli import convert_checkpoint, inspect_checkpoint, resolve_source, verify_folder

    src = resolve_source("vits16")                     # a released name, a path or a URL
    report = inspect_checkpoint(src)                   # report.plan.arch, report.to_dict()
    result = convert_checkpoint(src, "vit-msn-small")  # writes the folder, then verifies it
    assert result.verify["passed"]
    check = verify_folder("vit-msn-small")             # VerifyReport: .passed, .checks, .layers

Names are imported on first use, so ``import msn_cli`` loads neither torch, transformers,
Typer nor Rich. The conversion function is ``convert_checkpoint`` (the name ``convert`` is
the submodule :mod:`msn_cli.convert`, which would shadow a function of that name).
Long steps take ``progress=callable(stage, done, total)``. Failures raise
:class:`MsnError` subclasses (``message``, ``hint``, ``exit_code``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_LAZY: dict[str, tuple[str, str]] = {
    # functions
    "resolve_source": ("msn_cli.sources", "resolve_source"),
    "fetch": ("msn_cli.download", "fetch"),
    "fetch_many": ("msn_cli.download", "fetch_many"),
    "load_checkpoint": ("msn_cli.checkpoint", "load_checkpoint"),
    "infer_architecture": ("msn_cli.checkpoint", "infer_architecture"),
    "inspect_checkpoint": ("msn_cli.inspect", "inspect_checkpoint"),
    "build_plan": ("msn_cli.plan", "build_plan"),
    "convert_checkpoint": ("msn_cli.convert", "convert"),
    "verify_folder": ("msn_cli.verify", "verify_folder"),
    "push_folder": ("msn_cli.push", "push_folder"),
    "convert_all": ("msn_cli.batch", "convert_all"),
    "read_run_config": ("msn_cli.runconfig", "read_run_config"),
    "inspect_run": ("msn_cli.runfolder", "inspect_run"),
    "export_checkpoint": ("msn_cli.export", "export"),
    "plan_export": ("msn_cli.export", "plan_export"),
    # the data they return
    "ResolvedSource": ("msn_cli.sources", "ResolvedSource"),
    "Checkpoint": ("msn_cli.checkpoint", "Checkpoint"),
    "Inferred": ("msn_cli.checkpoint", "Inferred"),
    "Architecture": ("msn_cli.architecture", "Architecture"),
    "InspectReport": ("msn_cli.inspect", "InspectReport"),
    "ConversionPlan": ("msn_cli.plan", "ConversionPlan"),
    "ConvertResult": ("msn_cli.convert", "ConvertResult"),
    "VerifyReport": ("msn_cli.verify", "VerifyReport"),
    "PushResult": ("msn_cli.push", "PushResult"),
    "CachedFile": ("msn_cli.download", "CachedFile"),
    "BatchItem": ("msn_cli.batch", "BatchItem"),
    "ExportPlan": ("msn_cli.export", "ExportPlan"),
    "ExportResult": ("msn_cli.export", "ExportResult"),
    "ProgressFn": ("msn_cli.progress", "ProgressFn"),
    "Provenance": ("msn_cli.provenance", "Provenance"),
    "Known": ("msn_cli.provenance", "Known"),
    "RunConfig": ("msn_cli.runconfig", "RunConfig"),
    "RunReport": ("msn_cli.runfolder", "RunReport"),
    # errors
    "MsnError": ("msn_cli.errors", "MsnError"),
    "UsageError": ("msn_cli.errors", "UsageError"),
    "CheckpointError": ("msn_cli.errors", "CheckpointError"),
    "MappingError": ("msn_cli.errors", "MappingError"),
    "OutputExistsError": ("msn_cli.errors", "OutputExistsError"),
    "FolderError": ("msn_cli.errors", "FolderError"),
    "VerificationFailed": ("msn_cli.errors", "VerificationFailed"),
    "NetworkError": ("msn_cli.errors", "NetworkError"),
    "ConfigError": ("msn_cli.errors", "ConfigError"),
}

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

if TYPE_CHECKING:
    from .architecture import Architecture as Architecture
    from .batch import BatchItem as BatchItem
    from .batch import convert_all as convert_all
    from .checkpoint import Checkpoint as Checkpoint
    from .checkpoint import Inferred as Inferred
    from .checkpoint import infer_architecture as infer_architecture
    from .checkpoint import load_checkpoint as load_checkpoint
    from .convert import ConvertResult as ConvertResult
    from .convert import convert as convert_checkpoint
    from .download import CachedFile as CachedFile
    from .download import fetch as fetch
    from .download import fetch_many as fetch_many
    from .errors import CheckpointError as CheckpointError
    from .errors import ConfigError as ConfigError
    from .errors import FolderError as FolderError
    from .errors import MappingError as MappingError
    from .errors import MsnError as MsnError
    from .errors import NetworkError as NetworkError
    from .errors import OutputExistsError as OutputExistsError
    from .errors import UsageError as UsageError
    from .errors import VerificationFailed as VerificationFailed
    from .export import ExportPlan as ExportPlan
    from .export import ExportResult as ExportResult
    from .export import export as export_checkpoint
    from .export import plan_export as plan_export
    from .inspect import InspectReport as InspectReport
    from .inspect import inspect_checkpoint as inspect_checkpoint
    from .plan import ConversionPlan as ConversionPlan
    from .plan import build_plan as build_plan
    from .progress import ProgressFn as ProgressFn
    from .provenance import Known as Known
    from .provenance import Provenance as Provenance
    from .push import PushResult as PushResult
    from .push import push_folder as push_folder
    from .runconfig import RunConfig as RunConfig
    from .runconfig import read_run_config as read_run_config
    from .runfolder import RunReport as RunReport
    from .runfolder import inspect_run as inspect_run
    from .sources import ResolvedSource as ResolvedSource
    from .sources import resolve_source as resolve_source
    from .verify import VerifyReport as VerifyReport
    from .verify import verify_folder as verify_folder


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'msn_cli' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
