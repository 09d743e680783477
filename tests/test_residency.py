"""msn_cli.util.residency: mapped weight pages are given back after use, and nothing else is."""

from __future__ import annotations

import sys

import pytest
import torch

from msn_cli.util.residency import PageReleaser, file_mappings

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps, madvise")


def _resident_kb(path) -> int:
    """Rss of this process's mappings of ``path`` (kB), from /proc/self/smaps."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):
                inside = line.rstrip().endswith(str(path))
            elif inside and first == "Rss:":
                total += int(line.split()[1])
    return total


@pytest.fixture
def mapped(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.arange(2_000_000, dtype=torch.float32)}, path)
    return path, torch.load(path, map_location="cpu", weights_only=True, mmap=True)["w"]


@linux
def test_mapped_pages_are_given_back_and_come_back_unchanged(mapped):
    path, w = mapped
    expected = torch.arange(2_000_000, dtype=torch.float32)
    assert torch.equal(w, expected)  # every page touched
    before = _resident_kb(path)
    assert before > 7000
    releaser = PageReleaser([path])
    assert releaser.active
    releaser.release([w])
    assert releaser.released > 7_000_000
    assert _resident_kb(path) < before / 10
    assert torch.equal(w, expected)  # faulted back in from the file


@linux
def test_anonymous_memory_and_other_files_are_left_alone(mapped, tmp_path):
    path, w = mapped
    copy = w.clone()  # anonymous memory: dropping its pages would zero it
    other = tmp_path / "other.pt"
    other.write_bytes(b"x")
    releaser = PageReleaser([other])  # w's file is not named
    assert not releaser.active
    releaser.release([w, copy])
    releaser = PageReleaser([path])
    releaser.release([copy, w[::2]])  # a copy, and a view that is not contiguous
    assert releaser.released == 0
    assert torch.equal(copy, torch.arange(2_000_000, dtype=torch.float32))


@linux
def test_ranges_are_the_named_files_only(mapped, tmp_path):
    path, w = mapped
    ranges = file_mappings([path])
    assert ranges and any(a <= w.data_ptr() < b for a, b in ranges)
    assert file_mappings([tmp_path / "absent"]) == []


@linux
def test_hooks_release_each_module_after_it_runs_and_are_removed(tmp_path):
    lin = torch.nn.Linear(512, 512)
    path = tmp_path / "lin.pt"
    torch.save(lin.state_dict(), path)
    model = torch.nn.Sequential(torch.nn.Linear(512, 512))
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    model[0].load_state_dict(state, assign=True)
    x = torch.randn(2, 512)
    want = lin(x)
    releaser = PageReleaser([path])
    with releaser.after_each_module(model), torch.inference_mode():
        got = model(x)
    assert releaser.released >= 512 * 512 * 4 - 2 * 4096
    assert torch.equal(got, want)
    n = releaser.released
    with torch.inference_mode():
        assert torch.equal(model(x), want)  # the weights come back from the file
    assert releaser.released == n  # the hooks are gone
