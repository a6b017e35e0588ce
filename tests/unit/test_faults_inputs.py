"""Fault injection in inputs: malicious and corrupt archives and checkpoints, a malformed
summary.json, a broken config.yaml. Each must end in a one-line error that names the file and
the fix, never in a traceback, a code execution or unbounded memory.

tests/integration/test_faults_system.py covers faults of processes and the file system.
"""
import errno
import io
import json
import os
import re
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from snakemake.exceptions import WorkflowError

import apot.data.archives
from apot.cli import main
from apot.data.archives import MAX_MEMBER_BYTES, read_split
from apot.errors import UserError
from apot.storage.checkpoints import load_file
from apot.workflow.configfile import check_yaml

REPO = Path(__file__).resolve().parents[2]


def png_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def image_members(per_class: int = 2) -> dict[str, bytes]:
    """A valid image-folder dataset: mini/<split>/<class>/<i>.png, two classes."""
    return {f"mini/{split}/{cls}/{i}.png": png_bytes(100 * s + 10 * c + i)
            for s, split in enumerate(("train", "test")) for c, cls in enumerate(("cat", "dog"))
            for i in range(per_class)}


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    """A .zip or .tar[.gz] holding ``members`` as given, names unchecked (as an attacker can)."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        return path
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


# --------------------------------------------------------------------------- archives

@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_highly_compressed_member_is_refused_without_being_read(tmp_path, suffix):
    bomb = "mini/test/cat/0.png"
    members = {**image_members(), bomb: bytes(MAX_MEMBER_BYTES + 1)}  # zeros: compresses ~1000x
    path = write_archive(tmp_path / f"bomb{suffix}", members)
    assert path.stat().st_size < 1 << 20  # small on disk, 32 MiB unpacked
    tracemalloc.start()
    try:
        with pytest.raises(UserError) as info:
            read_split(path, "test")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    text = str(info.value)
    assert f"archive {path} is unsafe" in text
    assert repr(bomb) in text
    assert f"{MAX_MEMBER_BYTES + 1:,} bytes" in text and f"cap of {MAX_MEMBER_BYTES:,}" in text
    assert "trusted source" in text
    assert peak < 8 << 20, f"reading the refused archive peaked at {peak:,} bytes"


def test_member_read_stops_past_its_header_size_if_the_header_lies(monkeypatch, tmp_path):
    monkeypatch.setattr(apot.data.archives, "MAX_MEMBER_BYTES", 100)
    handle = io.BytesIO(bytes(10_000))  # a member far larger than its header's 10 bytes
    with pytest.raises(UserError) as info:
        apot.data.archives._read_member(handle, 10, "x/test/a/0.png", tmp_path / "a.tar", 0)
    assert handle.tell() == 11  # never more than its declared size + 1 bytes read
    assert "holds more than the 10 bytes its header says" in str(info.value)
    assert apot.data.archives._read_member(io.BytesIO(bytes(100)), 100, "m", tmp_path, 0) == bytes(100)


@pytest.mark.parametrize("suffix", [".tar", ".zip"])
def test_archive_total_over_the_cap_is_refused(monkeypatch, tmp_path, suffix):
    path = write_archive(tmp_path / f"mini{suffix}", image_members())
    assert len(read_split(path, "test")[0]) == 4  # under the real caps it reads
    sizes = [len(data) for name, data in image_members().items() if "/test/" in name]
    monkeypatch.setattr(apot.data.archives, "MAX_ARCHIVE_BYTES", sum(sizes) - 1)
    with pytest.raises(UserError) as info:
        read_split(path, "test")
    text = str(info.value)
    assert f"archive {path} is unsafe" in text
    assert f"add up to more than the cap of {sum(sizes) - 1:,} bytes" in text
    assert "'mini/test/dog/1.png'" in text  # the member that went over


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
@pytest.mark.parametrize("name", ["mini/test/cat/../../../escape.png", "/tmp/apot-escape.png"])
def test_member_outside_the_archive_is_refused(tmp_path, suffix, name):
    path = write_archive(tmp_path / f"evil{suffix}", {**image_members(), name: png_bytes(0)})
    with pytest.raises(UserError) as info:
        read_split(path, "test")
    assert str(info.value) == (f"archive {path} is unsafe: member {name!r} points outside the "
                               f"archive (absolute path or '..'); refusing to read it")


def test_truncated_tar_gz_is_corrupt(tmp_path):
    whole = write_archive(tmp_path / "whole.tar.gz", image_members(per_class=20)).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(UserError) as info:
        read_split(cut, "test")
    assert str(info.value).startswith(f"dataset archive {cut} is corrupt or truncated (")
    assert str(info.value).endswith("); download or copy it again")


# --------------------------------------------------------------------------- checkpoints

class WritesMarkerWhenUnpickled:
    """Unpickling this object opens (and so creates) ``marker`` for writing: code execution."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on protocol 4
@pytest.mark.parametrize("protocol,zip_format", [(2, False), (4, False), (2, True), (4, True)],
                         ids=["legacy-protocol2", "legacy-protocol4", "zip", "zip-protocol4"])
def test_pickle_that_would_run_code_is_refused(tmp_path, protocol, zip_format):
    marker = tmp_path / "code-ran.marker"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": WritesMarkerWhenUnpickled(str(marker))},
               path, pickle_protocol=protocol, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UserError) as info:
        load_file(path)
    assert str(info.value) == (
        f"checkpoint {path} was refused: it asks to load io.open, which is not a tensor or "
        f"plain container, and loading it could run code. Re-save its state dict from a "
        f"trusted environment.")
    assert not marker.exists()


def corrupt_checkpoints(tmp_path: Path) -> dict[str, Path]:
    legacy = tmp_path / "legacy.pth"
    torch.save({"a": torch.ones(64), "b": torch.ones(8)}, legacy,
               _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    last_global = data.rindex(b"ctorch")  # after allowed globals: the damage is all there is
    files = {"zeros-after-header": b"\x80\x02" + bytes(200),
             "truncated-legacy": data[:60],
             "flipped-opcode": data[:last_global] + b"\xff" + data[last_global + 1:]}
    for name, data in files.items():
        (tmp_path / f"{name}.pth").write_bytes(data)
    return {name: tmp_path / f"{name}.pth" for name in files}


@pytest.mark.parametrize("kind", ["zeros-after-header", "truncated-legacy", "flipped-opcode"])
def test_damaged_checkpoint_is_corrupt_not_refused(tmp_path, kind):
    path = corrupt_checkpoints(tmp_path)[kind]
    with pytest.raises(UserError) as info:
        load_file(path)
    assert str(info.value).startswith(f"checkpoint {path} is corrupt or not a PyTorch checkpoint")
    assert "refused" not in str(info.value)


# --------------------------------------------------------------------------- summary.json

def minimal_summary() -> dict:
    """The top-level keys the report reads, with their types; nothing inside."""
    return {"preset": "quick", "description": "", "full_scale": False,
            "config": {"presets": {"quick": {"seeds": [0]}}}, "data": {}, "runs": [],
            "groups": [], "provenance": {}, "cost": None, "authors": None}


def without(key: str) -> dict:
    summary = minimal_summary()
    del summary[key]
    return summary


def run_without(key: str) -> dict:
    """A summary whose one run entry lacks ``key``."""
    run = {"path": "x", "status": "done"}
    del run[key]
    return {**minimal_summary(), "runs": [run]}


MALFORMED = {
    "not-json": ('{"preset": "quick",', r"is damaged: not valid JSON \(.*\); write it again"),
    "list": ([], "holds a JSON array, not an object: it is not a summary"),
    "no-runs": (without("runs"), "has no 'runs' key: it is not a summary"),
    "no-preset": (without("preset"), "has no 'preset' key"),
    "runs-object": ({**minimal_summary(), "runs": {}}, "'runs' is a JSON object, not a JSON array"),
    "full-scale-string": ({**minimal_summary(), "full_scale": "no"},
                          "'full_scale' is a JSON string, not a JSON boolean"),
    "cost-list": ({**minimal_summary(), "cost": []}, "'cost' is a JSON array, not a JSON object"),
    "unknown-preset": ({**minimal_summary(), "preset": "other"},
                       "its 'config' has no preset 'other' under 'presets'"),
    "run-without-status": (run_without("status"), r"runs\[0\] has no 'status' \(a string\)"),
    "group-not-object": ({**minimal_summary(), "groups": [3]}, r"groups\[0\] has no 'status'"),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_summary_is_a_one_line_error(tmp_path, capsys, kind):
    content, expected = MALFORMED[kind]
    summary = tmp_path / "summary.json"
    summary.write_text(content if isinstance(content, str) else json.dumps(content))
    code = main(["report", "--summary", str(summary), "--out-dir", str(tmp_path / "build")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"apot report: error: {summary}")
    assert re.search(expected, err), err
    assert "snakemake --cores 1 --forcerun summarize summarize" in err
    assert not (tmp_path / "build").exists()


def test_minimal_summary_passes_the_check(tmp_path):
    from apot.reporting.render import read_summary

    path = tmp_path / "summary.json"
    path.write_text(json.dumps(minimal_summary()))
    assert read_summary(path) == minimal_summary()


# --------------------------------------------------------------------------- config.yaml

BROKEN_YAML = {
    "mapping-value": ("preset: quick\nseeds: a: 1\n",
                      "line 2, column 9: mapping values are not allowed here; fix the YAML there"),
    "unclosed-list": ("preset: quick\nseeds: [0, 1\nother: 2\n",
                      "line 3, column 6: expected ',' or ']', but got ':' (while parsing a flow "
                      "sequence at line 2); fix the YAML there"),
    "tab": ("preset: quick\nrun:\n\tepochs: 2\n",
            "line 3, column 1: found character '\\t' that cannot start any token; "
            "fix the YAML there"),
}


@pytest.mark.parametrize("kind", list(BROKEN_YAML))
def test_broken_yaml_names_line_and_column(tmp_path, kind):
    text, expected = BROKEN_YAML[kind]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(WorkflowError) as info:
        check_yaml(path)
    assert str(info.value) == f"{path} {expected}"


@pytest.mark.parametrize("text,what", [("- a\n- b\n", "a list"), ("", "empty"),
                                       ("quick\n", "one value")])
def test_config_that_is_not_a_mapping(tmp_path, text, what):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(WorkflowError) as info:
        check_yaml(path)
    assert str(info.value).startswith(f"{path} is {what}, not a mapping of settings; ")


def edited_config(edit) -> dict:
    """The repository's config.yaml with ``edit`` applied (in place)."""
    import yaml
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    edit(config)
    return config


HOSTILE_CONFIG = {
    "lr-nan": (lambda c: c["presets"]["smoke"]["studies"]["cifar10"]["chain"][1].update(
        lr=float("nan")), "config key presets.smoke.studies.cifar10.chain[1].lr: nan is not a "
                          "finite number"),
    "lr-inf": (lambda c: c["presets"]["smoke"]["studies"]["warm"]["chain"][0].update(
        lr=float("inf")), "config key presets.smoke.studies.warm.chain[0].lr: inf is not a finite"),
    "momentum-nan": (lambda c: c["presets"]["quick"]["studies"]["warm"].update(
        momentum=float("nan")), "presets.quick.studies.warm.momentum: nan is not a finite"),
    "batch-1e12": (lambda c: c["presets"]["smoke"]["studies"]["cifar10"].update(
        batch_size=1e12), "config key presets.smoke.studies.cifar10.batch_size: "
                          "1000000000000.0 is greater than the maximum of 65536"),
    "step-batch": (lambda c: c["presets"]["smoke"]["studies"]["cifar10"]["chain"][1].update(
        batch_size=10**9), "chain.1.batch_size: 1000000000 is greater than the maximum"),
    "epochs": (lambda c: c["presets"]["smoke"]["studies"]["cifar10"].update(epochs=10**9),
               "presets.smoke.studies.cifar10.epochs: 1000000000 is greater than the maximum"),
    "subset": (lambda c: c["presets"]["smoke"]["datasets"]["cifar10"].update(
        train_per_class=10**12), "train_per_class: 1000000000000 is greater than the maximum"),
    "preset-name": (lambda c: c.update(preset="x$(touch PWN)"),
                    "config key preset: 'x$(touch PWN)' does not match '^[A-Za-z0-9_-]+$'"),
    "preset-key": (lambda c: c["presets"].update({"x;rm": c["presets"]["smoke"]}),
                   "config key presets: 'x;rm' does not match"),
    "study-key": (lambda c: c["presets"]["smoke"]["studies"].update(
        {"a b": c["presets"]["smoke"]["studies"]["cifar10"]}), "'a b' does not match"),
}


@pytest.mark.parametrize("kind", list(HOSTILE_CONFIG))
def test_a_hostile_config_value_is_refused_with_its_key(kind):
    from apot.workflow.study import validate_config
    edit, message = HOSTILE_CONFIG[kind]
    with pytest.raises(UserError) as caught:
        validate_config(edited_config(edit))
    assert message in str(caught.value)


# The values a rule command formats that need no quoting: the interpreter and the flags the
# Snakefile builds with shlex.quote, the thread count, and wildcards whose constraints allow
# digits and letters only (rules/common.smk).
QUOTED_ALREADY = {"APOT", "DEVICE_ARGS", "SOURCE_ARGS", "AUTHORS_DIR", "params.subset",
                  "params.args", "threads", "wildcards.bits", "wildcards.arch"}


def test_every_path_in_a_rule_command_is_quoted():
    """A path with a space or a shell character (a workflow folder, a run name) cannot split
    a job's command or run one of its own: every formatted value is quoted (:q) unless the
    Snakefile quoted it or its pattern allows no such character."""
    fields = []
    for path in sorted((REPO / "rules").glob("*.smk")):
        for shell in re.findall(r"shell:\n((?:\s+\".*\"\n)+)", path.read_text()):
            fields += [(path.name, f) for f in re.findall(r"\{([^{}]+)\}", shell)]
    assert len(fields) > 30
    unquoted = [(name, f) for name, f in fields if not f.endswith(":q") and f not in QUOTED_ALREADY]
    assert unquoted == []


def test_good_or_missing_config_passes_and_the_snakefile_checks_first(tmp_path):
    check_yaml(REPO / "config.yaml")
    check_yaml(tmp_path / "missing.yaml")  # Snakemake reports a missing file itself
    snakefile = (REPO / "Snakefile").read_text()
    call, directive = 'check_yaml("config.yaml")', 'configfile: "config.yaml"'
    assert call in snakefile and snakefile.index(call) < snakefile.index(directive)


# ---------------------------------------------------------------- operating-system errors

@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "no space left on device (results/x/checkpoint.pt); free space there"),
    (errno.EACCES, "permission denied (results/x/checkpoint.pt); check the permissions"),
    (errno.EROFS, "read-only file system (results/x/checkpoint.pt); that file system is "
                  "read-only: write elsewhere"),
    (errno.ENOENT, "no such file or directory (results/x/checkpoint.pt); create the folder"),
    (errno.ENOTDIR, "not a directory (results/x/checkpoint.pt); a part of the path is a file"),
])
def test_an_os_error_is_one_line_with_cause_path_and_fix(code, words):
    from apot.errors import os_error_message
    message = os_error_message(OSError(code, os.strerror(code), "results/x/checkpoint.pt"))
    assert message.startswith(words) and "\n" not in message


def test_an_os_error_without_text_and_a_folder_that_takes_no_file_are_named(tmp_path):
    from apot.errors import os_error_message
    assert os_error_message(OSError()) == ("an operating-system error (OSError) without a "
                                           "description")
    assert os_error_message(OSError(errno.EIO, "")) == "input/output error"
    assert os_error_message(OSError("the disk is on fire")) == "the disk is on fire"
    message = os_error_message(FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT),
                                                 str(tmp_path / "x.json")))
    assert "the folder exists but does not take new files" in message
    assert "create the folder" not in message


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_out_in_a_folder_that_takes_no_file_is_refused_before_the_work(capsys):
    assert main(["cost", "--arch", "resnet20", "--bits", "4", "--out", "/proc/x.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("apot cost: error: --out /proc/x.json: no file can be created in "
                          "/proc") and "write elsewhere" in err and "create the folder" not in err
    assert len(err.strip().splitlines()) == 1 and not err.count("{")


def test_an_os_error_in_any_command_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    from apot.cli import commands

    def denied(args):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "x"))
    monkeypatch.setattr(commands, "levels", denied)
    assert main(["levels", "--bits", "3"]) == 1
    err = capsys.readouterr().err
    assert err == (f"apot levels: error: permission denied ({tmp_path / 'x'}); check the "
                   f"permissions of the path\n")
