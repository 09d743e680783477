"""``msn push``: publish a verified converted folder to the Hugging Face Hub, with a model card."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.text import Text

from msn_cli.cli.options import JsonOpt, QuietOpt, VerboseOpt
from msn_cli.cli.term import Term, styled
from msn_cli.util.fmt import human_size

if TYPE_CHECKING:
    from msn_cli.transfer.push import PushPlan, PushResult


def push(
    folder: Annotated[Path, typer.Argument(help="A folder written by msn convert (and verified).",
                                           show_default=False)],
    repo_id: Annotated[str, typer.Argument(help="Hub repository: NAMESPACE/NAME (your user or an "
                                                "organization); created if missing.", show_default=False)],
    private: Annotated[bool, typer.Option("--private/--no-private", help="Create the repo private, "
                                          "or public (an existing repo keeps its visibility).")] = False,
    revision: Annotated[Optional[str], typer.Option(
        "--revision", help="Branch to commit to; created from main if missing \\[default: main].",
        show_default=False)] = None,
    create_pr: Annotated[bool, typer.Option("--create-pr", help="Open a pull request instead of "
                                                                "committing to the branch.")] = False,
    commit_message: Annotated[Optional[str], typer.Option(
        "--commit-message", "-m", help="Commit title \\[default: names the model and msn version].",
        show_default=False)] = None,
    token: Annotated[Optional[str], typer.Option(
        "--token", help="Hugging Face token with write access \\[default: $HF_TOKEN, else the stored "
                        "login]. Never printed.", show_default=False)] = None,
    card: Annotated[Optional[Path], typer.Option(
        "--card", help="Markdown file that replaces the generated card's body (the metadata "
                       "is kept).", show_default=False)] = None,
    license: Annotated[Optional[str], typer.Option(
        "--license", help="The card's license, a Hub license id (apache-2.0, mit, other, ...) "
                          "\\[default: cc-by-nc-4.0, the license of the MSN code and released weights].",
        show_default=False)] = None,
    skip_verify_check: Annotated[bool, typer.Option(
        "--skip-verify-check", help="Push even if the folder is unverified, failed verify, or "
                                    "differs from its manifest (with a warning).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the repo, every file with its size "
                                          "and whole sha256 (so does --json), and the card when stdout "
                                          "is not a terminal; send nothing.")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Publish a converted, verified folder to the Hugging Face Hub as a model repository.

    Before anything is sent, the folder's msn_manifest.json must record a passed msn verify
    and every file must match the manifest's size and sha256. Then: create the repo if
    needed, create --revision if it is a missing branch, and make ONE commit holding
    model.safetensors, config.json, preprocessor_config.json, msn_manifest.json and a
    generated model card (README.md), so a failed upload leaves the repo as it was. Each
    file is uploaded as it was checked (held open, links not followed). The endpoint is
    $HF_ENDPOINT when set.

    FOLDER comes first, as in every msn command; hf upload's order (REPO_ID FOLDER) is
    recognised, and said, when only the second argument is a folder here.

    --dry-run lists each file's whole sha256, as --json does. It prints the card to a pipe
    (--dry-run | less), not to a terminal: its tables and code would break mid-word there,
    and a re-wrapped card would not be the text that is published.

    Exit codes: 0 pushed, 1 verify recorded a failure, 2 usage, 3 folder unverified, incomplete
    or changed since convert, 4 Hub/network error (bad token, no rights, offline),
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM).

    Examples:

      msn push ./vit-msn-small my-org/vit-msn-small --dry-run

      msn push ./vit-msn-small my-org/vit-msn-small --private

      msn push ./vit-msn-small my-org/vit-msn-small --revision fp16 --create-pr

      msn push ./my-run-vits16 my-org/my-msn-vits16 --license apache-2.0

      HF_TOKEN=hf_... msn push ./out my-org/vit-msn-small --json
    """
    from msn_cli.transfer.push import plan_push

    term = Term(json_mode=json_out, quiet=quiet, verbose=verbose)
    folder, repo_id = _argument_order(term, folder, repo_id)
    with term.progress() as progress:
        plan = plan_push(folder, repo_id, private=private, revision=revision, create_pr=create_pr,
                         commit_message=commit_message, card_path=card,
                         skip_verify_check=skip_verify_check, license=license, progress=progress)
    with contextlib.closing(plan):
        _publish(term, plan, token, dry_run=dry_run, json_out=json_out)


def _publish(term: Term, plan: PushPlan, token: str | None, *, dry_run: bool, json_out: bool) -> None:
    """The plan's warnings, then what a push would send (``dry_run``) or the push and its result."""
    for w in plan.warnings:
        term.warn(w)
    if dry_run:
        _dry_run(term, plan, json_out)
        return
    result = _send(term, plan, token)
    if json_out:
        term.emit_json(result.to_dict())
    else:
        _say_pushed(term, result)


def _argument_order(term: Term, folder: Path, repo_id: str) -> tuple[Path, str]:
    """FOLDER REPO_ID as given, or the two swapped when they are hf upload's REPO_ID FOLDER: the
    first is no folder here but a valid repo id, and the second is a folder."""
    from msn_cli.errors import UsageError
    from msn_cli.transfer.push import check_repo_id

    given = Path(repo_id)
    if folder.is_dir() or not given.is_dir():
        return folder, repo_id
    try:
        rid = check_repo_id(str(folder))
    except UsageError:
        return folder, repo_id
    term.info(f"taking {given} as FOLDER and {rid} as REPO_ID: msn push takes FOLDER REPO_ID, "
              "the reverse of hf upload's order")
    return given, rid


def _send(term: Term, plan: PushPlan, token: str | None) -> PushResult:
    """The one commit (or pull request), with progress; warnings the Hub gave are said."""
    from msn_cli.transfer.push import push_token, send_push

    token = push_token(token)  # no token, or offline: said before "pushing N files"
    if not term.interactive:
        _quiet_hub_bars()
    term.info(f"pushing {len(plan.files)} files ({human_size(plan.total_bytes)}) to {plan.repo_id}"
              f"{' as a pull request' if plan.create_pr else ''}"
              f"{f' on branch {plan.revision}' if plan.revision else ''}")
    before = len(plan.warnings)
    with term.progress() as progress:
        result = send_push(plan, token=token, progress=progress)
    for w in plan.warnings[before:]:
        term.warn(w)
    return result


def _dry_run(term: Term, plan: PushPlan, json_out: bool) -> None:
    """What a push would send (the repo, the files, the card); nothing is sent."""
    from msn_cli.transfer.push import PushResult, hub_endpoint

    result = PushResult(plan, hub_endpoint(), dry_run=True)
    if json_out:
        term.emit_json(result.to_dict())
        return
    _render_plan(term, result)
    term.info(f"dry run: nothing was sent to {result.endpoint}")


def _say_pushed(term: Term, result: PushResult) -> None:
    """Where the files went: the commit, the pull request, or nothing to push (its URL on stdout)."""
    plan = result.plan
    if result.repo_created:
        term.detail(f"created {result.repo_url}{' (private)' if plan.private else ''}")
    term.detail(f"as {result.user} on {result.endpoint}")
    if result.changed is False:
        term.success(f"nothing to push: {plan.repo_id} ({plan.revision or 'main'}) already holds exactly "
                     f"these files; no {'pull request' if plan.create_pr else 'commit'} made")
        url = str(result.commit_url)
    elif result.pr_url:
        term.success(f"opened pull request #{result.pr_num} on {plan.repo_id}: {result.pr_url}")
        url = result.pr_url
    else:
        term.success(f"committed to {plan.repo_id} ({plan.revision or 'main'}): {result.commit_url}")
        url = str(result.commit_url)
    if not term.quiet:
        term.line(url)


def _render_plan(term: Term, result: PushResult) -> None:
    """Each file on a line with its size, its whole sha256 on the next (a 64-digit hash fits 80
    columns only on a line of its own; it is never cut or split), then the card."""
    plan = result.plan
    where = f"{result.endpoint}/{plan.repo_id}"
    mode = "pull request against" if plan.create_pr else "commit to"
    term.data(styled(f"Would {mode} {where} ({plan.revision or 'main'}"
                     f"{', private if created' if plan.private else ''}):", "bold"))
    width = max(len(f.path) for f in plan.files)
    for f in plan.files:
        term.data(Text(f"  {f.path:<{width}}  {human_size(f.size):>9}\n    sha256 {f.sha256}"))
    term.data(f"{len(plan.files)} files, {human_size(plan.total_bytes)}; message: {plan.commit_message}")
    size = len(plan.card.encode())
    if term.out.is_terminal:
        term.data(Text.assemble(
            styled("\nREADME.md", "bold"),
            f" (the model card, {human_size(size)}, {plan.card.count(chr(10))} lines) is not shown on a "
            "terminal, where its tables and code would break mid-word; read it exactly as it will "
            "be published with: msn push ... --dry-run | less (or --json, its \"card\")"))
        return
    term.data(styled("\nREADME.md (model card):\n", "bold"))
    term.line(plan.card)


def _quiet_hub_bars() -> None:
    """huggingface_hub draws its own tqdm bars for LFS/Xet uploads: not on a pipe or with --json."""
    from huggingface_hub.utils.tqdm import disable_progress_bars

    disable_progress_bars()
