"""Hub fetches (``export`` from a repo id, ``verify --against``): only config.json and the
weights (the shards the index names), each size-capped; a missing local path is never sent to
the Hub as a repo id. The Hub's listing (``hub_fetch.list_files``) and ``snapshot_download``
are replaced by a stand-in repository that honours ``allow_patterns`` as huggingface_hub does,
and records what was asked and fetched."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import huggingface_hub
import pytest

from msn_cli.errors import NetworkError
from msn_cli.transfer import hub_fetch
from msn_cli.transfer.hub_fetch import clearly_repo_id, fetch_model_folder, is_repo_id

HINT = "test"


class FakeRepo:
    """Files of one repository; ``sizes`` overrides what the listing says of a file."""

    def __init__(self, root: Path, files: dict[str, bytes], sizes: dict[str, int] | None = None):
        self.root, self.files, self.sizes = root, files, sizes or {}
        self.fetched: list[str] = []  # files written into the snapshot (not dry runs)
        self.calls: list[tuple[str, dict]] = []

    def install(self, monkeypatch) -> FakeRepo:
        """Stand in for the Hub: its listing (``hub_fetch.list_files``) and ``snapshot_download``."""
        from msn_cli.transfer import hub_fetch

        monkeypatch.setattr(huggingface_hub, "snapshot_download", self)
        monkeypatch.setattr(hub_fetch, "list_files", self.listing)
        return self

    def listing(self, repo_id):
        """What ``HfApi.model_info(files_metadata=True)`` says: the commit, each file's size."""
        self.calls.append((repo_id, {"listing": True}))
        return "c0ffee", {n: self.sizes.get(n, len(b)) for n, b in self.files.items()}

    def __call__(self, repo_id, *, allow_patterns=None, local_files_only=False, revision=None,
                 **kwargs):
        self.calls.append((repo_id, {"allow_patterns": allow_patterns}))
        if local_files_only:
            raise OSError("nothing cached")
        names = [n for n in self.files
                 if allow_patterns is None or any(fnmatch.fnmatch(n, p) for p in allow_patterns)]
        self.root.mkdir(parents=True, exist_ok=True)
        for n in names:
            (self.root / n).write_bytes(self.files[n])
            self.fetched.append(n)
        return str(self.root)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    def install(files, sizes=None) -> FakeRepo:
        return FakeRepo(tmp_path / "snapshot", files, sizes).install(monkeypatch)
    return install


def _folder_files(cli, tiny_ckpt, tmp_path) -> dict[str, bytes]:
    out = tmp_path / "converted"
    assert cli("convert", tiny_ckpt, out, "--no-verify").code == 0
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


EXTRAS = {"evil.py": b"import os\n", "pytorch_model.bin": b"pickle", "big.json": b"{}",
          "other.safetensors": b"x", "preprocessor_config.json": b"{}"}


def test_export_from_a_repo_id_fetches_only_the_config_and_the_weights(cli, tiny_ckpt, tmp_path,
                                                                       fake_hub):
    repo = fake_hub({**_folder_files(cli, tiny_ckpt, tmp_path), **EXTRAS})
    r = cli("export", "some-org/vit-msn-tiny", tmp_path / "o.pth.tar")
    assert r.code == 0, r.stderr
    assert sorted(repo.fetched) == ["config.json", "model.safetensors"]


def test_verify_against_a_repo_id_fetches_only_the_config_and_the_weights(cli, tiny_ckpt, tmp_path,
                                                                          fake_hub):
    files = _folder_files(cli, tiny_ckpt, tmp_path)
    repo = fake_hub({**files, **EXTRAS})
    r = cli("verify", tmp_path / "converted", "--against", "some-org/vit-msn-tiny", "--json")
    assert "cannot fetch" not in r.stderr, r.stderr
    assert sorted(repo.fetched) == ["config.json", "model.safetensors"]


def test_a_sharded_repo_fetches_the_shards_its_index_names_and_nothing_else(tmp_path, fake_hub):
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    repo = fake_hub({"config.json": b"{}", "model.safetensors.index.json": json.dumps(index).encode(),
                     "model-00001-of-00002.safetensors": b"1", "model-00002-of-00002.safetensors": b"2",
                     "model-00003-of-00002.safetensors": b"not named", "decoy.json": b"{}"})
    folder = fetch_model_folder("org/name", hint=HINT)
    assert sorted(repo.fetched) == ["config.json", "model-00001-of-00002.safetensors",
                                    "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    assert (folder / "model-00002-of-00002.safetensors").read_bytes() == b"2"


@pytest.mark.parametrize("shard", ["../escape.safetensors", "sub/dir.safetensors", "x.bin"])
def test_an_index_naming_other_files_is_refused(tmp_path, fake_hub, shard):
    index = {"weight_map": {"a": shard}}
    repo = fake_hub({"config.json": b"{}", "model.safetensors.index.json": json.dumps(index).encode()})
    with pytest.raises(NetworkError, match="plain"):
        fetch_model_folder("org/name", hint=HINT)
    assert "config.json" not in repo.fetched


@pytest.mark.parametrize(("name", "size", "env"), [
    ("model.safetensors", 20 * 1024**3, None),          # over the documented 16 GiB
    ("model.safetensors", 2_000, "1000"),               # over MSN_DOWNLOAD_MAX_SIZE
    ("config.json", 17 * 1024 * 1024, None),            # a config is a few kB
])
def test_a_file_over_its_cap_is_refused_before_a_byte_of_it_arrives(tmp_path, fake_hub, monkeypatch,
                                                                     name, size, env):
    if env:
        monkeypatch.setenv("MSN_DOWNLOAD_MAX_SIZE", env)
    repo = fake_hub({"config.json": b"{}", "model.safetensors": b"w"}, sizes={name: size})
    with pytest.raises(NetworkError, match="more than msn fetches"):
        fetch_model_folder("org/name", hint=HINT)
    assert repo.fetched == []


def test_a_file_that_arrives_longer_than_listed_is_refused(tmp_path, fake_hub):
    fake_hub({"config.json": b"{}", "model.safetensors": b"www"}, sizes={"model.safetensors": 1})
    with pytest.raises(NetworkError, match="arrived with 3 bytes"):
        fetch_model_folder("org/name", hint=HINT)


@pytest.mark.parametrize(("spec", "ok"), [
    ("facebook/vit-msn-small", True), ("org/name.v2", True),
    ("./org/name", False), ("org/name/", False), ("org/name/extra", False), ("/org/name", False),
    ("org/../name", False), ("org/name.pth.tar", False), ("org", False), ("org/.name", False),
    ("https://x/y", False), ("~/name", False),
])
def test_what_counts_as_a_repo_id(spec, ok):
    assert is_repo_id(spec) is ok


def test_a_missing_local_path_is_not_sent_to_the_hub(cli, tmp_path, monkeypatch, fake_hub, tiny_ckpt):
    repo = fake_hub({"config.json": b"{}"})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert not clearly_repo_id("runs/latest")
    r = cli("export", "runs/latest", tmp_path / "o.pth.tar")
    assert r.code == 3 and "no such file" in r.stderr, r.stderr
    out = tmp_path / "conv"
    assert cli("convert", tiny_ckpt, out, "--no-verify").code == 0
    r = cli("verify", out, "--against", "runs/latest")
    assert r.code != 0 and "no such folder here" in r.stderr, r.stderr
    for spec in ("./runs/x", "org/name/extra", "org/name/"):
        r = cli("verify", out, "--against", spec)
        assert "no such folder here" in r.stderr, (spec, r.stderr)
    assert repo.calls == []  # nothing asked of the Hub, so no token went anywhere


def test_offline_uses_what_an_earlier_fetch_cached_and_fetches_nothing(tmp_path, monkeypatch):
    cached = tmp_path / "cached"
    cached.mkdir()
    calls = []

    def no_listing(repo_id):
        calls.append("listing")
        raise OSError("offline mode is enabled")

    def offline(repo_id, *, local_files_only=False, **kwargs):
        calls.append(("snapshot", local_files_only))
        if not local_files_only:
            raise OSError("offline mode is enabled")
        return str(cached)

    monkeypatch.setattr(hub_fetch, "list_files", no_listing)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    assert fetch_model_folder("org/name", hint=HINT) == cached
    assert calls == ["listing", ("snapshot", True)]  # the listing failed: the cache only


def test_nothing_cached_and_no_hub_is_one_network_error(tmp_path, monkeypatch):
    def down(repo_id, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr(hub_fetch, "list_files", down)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", down)
    with pytest.raises(NetworkError, match="cannot fetch org/name from the Hub: OSError: connection refused"):
        fetch_model_folder("org/name", hint=HINT)
