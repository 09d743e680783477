"""The benchmark's own pieces, and the performance paths of convert (no timing assertions).

- ``bench/run.py --help`` works; the seed-equivalent baseline and ``msn convert`` write
  tensor-identical files at a tiny size (and the comparison notices a different model);
- the memory figure is the process tree's anonymous memory, not mapped file pages;
- ``--against`` measures two revisions of msn side by side;
- the read-back check catches a byte changed on disk between the write and the check;
- the cheap NaN/Inf test agrees with the element-wise one, overflow included;
- ``gc.freeze`` after torch's import happens only in the CLI, when msn is what imports torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from msn_cli.dev.synth import TINY
from tests.conftest import REPO, TINY_MULTIHEAD


def _load_bench_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while they are built
    spec.loader.exec_module(module)
    return module


bench_compare = _load_bench_module("compare")
bench_measure = _load_bench_module("measure")


def test_bench_run_help():
    r = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--help"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    for opt in ("--quick", "--variants", "--runs", "--cold", "--output", "--against", "--after"):
        assert opt in r.stdout


MB = 1_000_000
ALLOCATE = "b = bytearray({n}); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(0.3)"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_the_memory_figure_is_anonymous_memory_of_the_process_tree(tmp_path: Path) -> None:
    """Touched heap pages count, in a child process too; pages of a mapped file do not."""
    measure = bench_measure.measure
    small = measure([sys.executable, "-c", "import time; time.sleep(0.3)"], tmp_path)
    heap = measure([sys.executable, "-c", ALLOCATE.format(n=200 * MB)], tmp_path)
    child = measure([sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, "
                     f"'-c', {ALLOCATE.format(n=200 * MB)!r}], check=True)"], tmp_path)
    data = tmp_path / "data.bin"
    data.write_bytes(b"\1" * (200 * MB))
    mapped = measure([sys.executable, "-c", f"import mmap, time; f = open({str(data)!r}, 'rb'); "
                      "m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); "
                      "assert sum(m[i] for i in range(0, len(m), 4096)) > 0; time.sleep(0.3)"],
                     tmp_path)
    assert all(r.rc == 0 for r in (small, heap, child, mapped))
    assert 0 < small.anon < 100 * MB
    assert heap.anon > small.anon + 180 * MB
    assert child.anon > small.anon + 180 * MB  # the child's heap, counted in its parent's tree
    assert mapped.anon < small.anon + 50 * MB  # 200 MB resident, all of it clean file pages


def test_the_report_replaces_its_part_of_the_page_and_keeps_the_rest(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import report

    page = tmp_path / "benchmarks.md"
    report.write_into(page, "first run\n")
    assert page.read_text() == f"# Benchmarks\n\n{report.BEGIN}\nfirst run\n{report.END}\n"
    text = page.read_text().replace("# Benchmarks\n", "# Benchmarks\n\nBy hand, above.\n")
    page.write_text(text + "\n## By hand, below\n")
    report.write_into(page, "second run\n")
    assert page.read_text() == (f"# Benchmarks\n\nBy hand, above.\n\n{report.BEGIN}\nsecond run\n"
                                f"{report.END}\n\n## By hand, below\n")


@pytest.mark.slow
def test_against_compares_two_revisions_in_alternating_runs(tmp_path: Path) -> None:
    """``--against HEAD``: HEAD in a worktree of its own against this tree, on the tiny model."""
    if subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=REPO, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    out = tmp_path / "against.md"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--against", "HEAD",
                        "--variants", "tiny", "--runs", "1", "--scratch", str(tmp_path / "s"),
                        "--output", str(out)], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    for cmd in ("convert --no-verify", "convert", "verify"):
        assert f"| tiny | `msn {cmd}` |" in text
    assert "tiny identical" in text and "**failed**" not in text
    assert not (tmp_path / "s" / "trees").exists() or not any((tmp_path / "s" / "trees").iterdir())
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=REPO, capture_output=True,
                               text=True).stdout
    assert str(tmp_path) not in worktrees  # removed again


def test_bench_run_rejects_unknown_variant(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--variants", "vitz99",
                        "--scratch", str(tmp_path), "--output", str(tmp_path / "b.md")],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and "vitz99" in r.stderr
    assert not (tmp_path / "b.md").exists()


def _arch_arg(a) -> str:
    return ",".join(str(x) for x in (a.hidden_size, a.num_layers, a.num_heads, a.intermediate_size,
                                     a.patch_size, a.image_size))


@pytest.mark.slow
@pytest.mark.parametrize("arch", [TINY, TINY_MULTIHEAD], ids=["tiny", "multihead"])
def test_baseline_and_msn_write_identical_tensors(cli, make_ckpt, tmp_path, arch):
    ckpt = make_ckpt(arch)
    seed_out, msn_out = tmp_path / "seed", tmp_path / "msn"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "baseline.py"), str(ckpt), str(seed_out),
                        "--no-check", "--arch", _arch_arg(arch), "--stages", str(tmp_path / "st.json")],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert cli("convert", ckpt, msn_out, "--no-verify").code == 0
    result = bench_compare.compare(msn_out, seed_out)
    n = 4 + 16 * arch.num_layers + 2
    assert result == {"tensors": n, "only_in_a": [], "only_in_b": [], "differing": [],
                      "identical": True}
    stages = json.loads((tmp_path / "st.json").read_text())
    assert {"load", "build_model", "load_state_dict", "save"} <= set(stages)

    # the comparison can fail: another model's weights differ everywhere
    other = tmp_path / "other"
    assert cli("convert", make_ckpt(arch, name="other.pth.tar", seed=5), other, "--no-verify").code == 0
    result = bench_compare.compare(msn_out, other)
    assert result["identical"] is False and len(result["differing"]) == n


def test_readback_check_catches_a_byte_changed_on_disk(cli, tiny_ckpt, tmp_path, monkeypatch):
    import msn_cli.conversion.convert as C

    real = C.write_safetensors

    def write_then_flip(path, *args, **kwargs):
        written = real(path, *args, **kwargs)
        with open(path, "r+b") as f:  # one bit, near the end of the data section
            f.seek(written.size - 5)
            b = f.read(1)
            f.seek(written.size - 5)
            f.write(bytes([b[0] ^ 0x01]))
        return written

    monkeypatch.setattr(C, "write_safetensors", write_then_flip)
    out = tmp_path / "out"
    r = cli("convert", tiny_ckpt, out, "--no-verify")
    assert r.code == 3
    assert "read-back check failed" in r.stderr and "differs from its source" in r.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["ckpts"]


def test_readback_check_passes_untouched_output(cli, tiny_ckpt, tmp_path, monkeypatch):
    import msn_cli.conversion.convert as C

    calls = []
    real = C.readback_check
    monkeypatch.setattr(C, "readback_check", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert cli("convert", tiny_ckpt, tmp_path / "out", "--no-verify").code == 0
    assert calls == [1]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_finite_check_matches_elementwise_test(dtype):
    from msn_cli.conversion.tensor_checks import all_finite

    dt = getattr(torch, dtype)
    big = torch.full((4096,), 60000.0).to(dt)  # finite values whose sum overflows float16
    assert all_finite(big) and bool(torch.isfinite(big).all())
    for bad in (float("nan"), float("inf"), float("-inf")):
        x = torch.randn(1000).to(dt)
        x[777] = bad
        assert not all_finite(x)
        x = big.clone()
        x[5] = bad
        assert not all_finite(x)
    assert all_finite(torch.randn(33, 7).to(dt))
    assert all_finite(torch.arange(10))  # integers are always finite


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "int64", "bool"])
def test_same_bits_finds_a_difference_anywhere(dtype):
    from msn_cli.conversion.tensor_checks import same_bits

    ref = (torch.randn(1000) > 0) if dtype == "bool" else torch.randn(1000).mul(100).to(getattr(torch, dtype))
    raw = bytearray(ref.view(torch.uint8).numpy().tobytes())
    got = torch.frombuffer(raw, dtype=ref.dtype)
    assert same_bits(got, ref)
    for i in (0, 1234 % len(raw), len(raw) - 1):
        raw[i] ^= 0x01
        assert not same_bits(got, ref)
        raw[i] ^= 0x01
    assert same_bits(got, ref)
    assert not same_bits(got[:-1], ref)  # a shorter read never matches
    assert not same_bits(got.reshape(10, 100), ref)  # nor another shape
    if dtype != "bool":  # nor the same bytes read as another dtype
        assert not same_bits(got.view(torch.uint8), ref.view(torch.uint8)[:-1])
    nan = torch.tensor([float("nan"), 0.0])
    assert same_bits(nan.clone(), nan)  # bit for bit: a NaN equals itself
    assert not same_bits(torch.tensor([float("nan"), -0.0]), nan)  # and -0.0 is not 0.0


def test_the_writer_writes_what_safetensors_reads(tmp_path):
    from safetensors import safe_open

    from msn_cli.hf.safetensors_io import PendingTensor, read_header, write_safetensors

    a, b = torch.randn(3, 5).t(), torch.arange(7, dtype=torch.bfloat16)  # ``a`` not contiguous
    tensors = [PendingTensor("b", "bfloat16", (7,), lambda: b),
               PendingTensor("a", "float32", (5, 3), lambda: a)]
    path, seen = tmp_path / "m.safetensors", []
    written = write_safetensors(path, tensors, {"k": "v"}, seen.append)
    assert path.stat().st_size == written.size and seen == [60, 14]  # in name order
    assert list(read_header(path)) == ["__metadata__", "a", "b"]
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"k": "v"}
        assert torch.equal(f.get_tensor("a"), a) and torch.equal(f.get_tensor("b"), b)
    planned_otherwise = [PendingTensor("a", "float32", (3, 5), lambda: a)]
    with pytest.raises(ValueError, match="planned"):
        write_safetensors(tmp_path / "w.safetensors", planned_otherwise, {})


def test_a_damaged_source_is_reported_as_damage_even_when_it_reads_as_nan(cli, tiny_ckpt, tmp_path):
    import zipfile

    with zipfile.ZipFile(tiny_ckpt) as zf:  # the first member holding tensor data
        info = next(i for i in zf.infolist() if "/data/" in i.filename and i.file_size >= 64)
    with open(tiny_ckpt, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        f.seek(info.header_offset + 30 + name_len + extra_len)
        f.write(b"\xff" * 64)  # float32 NaNs, and a CRC-32 that no longer matches
    out = tmp_path / "out"
    r = cli("convert", tiny_ckpt, out, "--no-verify")
    assert r.code == 3 and "CRC-32" in r.stderr and "NaN" not in r.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["ckpts"]


@pytest.mark.parametrize("torch_first,cli", [(False, True), (True, True), (False, False)],
                         ids=["cli", "cli-torch-first", "library"])
def test_gc_freeze_only_in_the_cli_when_msn_imports_torch(tiny_ckpt, torch_first, cli):
    code = ("import gc, sys\n" + ("import torch\n" if torch_first else "")
            + ("import msn_cli.original.checkpoint as c; c.FREEZE_GC_AFTER_TORCH = True\n" if cli else "")
            + "from msn_cli.original.checkpoint import load_checkpoint\n"
            + f"load_checkpoint({str(tiny_ckpt)!r})\n"
            + "print(gc.get_freeze_count())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    frozen = int(r.stdout.strip())
    assert (frozen > 100_000) if (cli and not torch_first) else (frozen == 0)
