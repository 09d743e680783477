"""``make demo``: the whole pipeline offline, on a small checkpoint in the original layout.

Real MSN weights need the network, so the demo writes a synthetic checkpoint (192 wide, the
width of ``deit_tiny``, 2 blocks) with the exact layout of Meta's released files
(``target_encoder`` with ``module.``-prefixed keys, the projection head, ``prototypes``) and
runs inspect, convert (with its verify), verify and a push dry run on it, exactly as a user
would type them. At that width the heads (3) come from the original model family.

    python -m msn_cli.dev.demo [FOLDER]      # default: ./demo-out
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from msn_cli.cli import main
from msn_cli.dev.synth import DEMO, write_checkpoint

CHECKPOINT = "vit-msn-tiny.pth.tar"
OUT = "vit-msn-tiny"


def write_demo_checkpoint(path: Path) -> Path:
    """The demo's checkpoint: small (192 wide, deit_tiny's width, so its heads come from the
    original model family), seeded, in the released layout."""
    return write_checkpoint(path, DEMO, "released", seed=0)


def steps(ckpt: str, out: str) -> list[list[str]]:
    """The demo's commands (docs/tour.md shows some of them: ``msn_cli.dev.tour``)."""
    return [
        ["inspect", ckpt],
        ["convert", ckpt, out, "--force"],
        ["verify", out],
        ["push", out, "your-org/vit-msn-tiny", "--dry-run"],
    ]


def run(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / CHECKPOINT
    out = folder / OUT
    if not ckpt.exists():
        write_demo_checkpoint(ckpt)
        print(f"wrote a synthetic checkpoint in the released layout: {ckpt}", file=sys.stderr)
    for args in steps(str(ckpt), str(out)):
        print(f"\n$ msn {shlex.join(args)}", file=sys.stderr, flush=True)
        code = main(args)
        if code != 0:
            print(f"\ndemo: 'msn {args[0]}' exited with {code}", file=sys.stderr)
            return code
    print(f"\ndemo: all four steps passed; the converted model is in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1] if len(sys.argv) > 1 else "demo-out")))
