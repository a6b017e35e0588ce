"""Fault injection in packed model files (apot eval --packed, apot.deploy.packed_file): hostile
headers, tensors and values. Each file must end in one line "apot eval: error: ..." (exit 2)
naming the file, the problem and the fix, never in a traceback or unbounded memory.

Most cases run in-process through apot.cli.main; those where memory or recursion is the risk
also run as a child process whose peak resident memory is measured (each child pays about
2 s of torch import).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from model_builder import INPUT, randomized_model, rewrite, write_checkpoint

from apot.cli import main
from apot.deploy.packed_file import (HEADER_KEY, MAX_APOT_HEADER_BYTES, MAX_CLASSES, MAX_JSON_DEPTH,
                                     export_packed, load_packed, nesting_exceeds, read_packed)
from apot.deploy.packed_layers import pack_model, unpack_model
from apot.models import build_model
from apot.quant.schemes import APOT

MEMORY_LIMIT_KIB = 1 << 20  # 1 GiB, in the KiB /proc/self/status counts VmHWM in
SAFETENSORS_NAMES = {np.dtype(np.uint8): "U8", np.dtype(np.int8): "I8",
                     np.dtype(np.int16): "I16", np.dtype(np.float32): "F32"}
NESTED = "[" * 200_000 + "]" * 200_000  # Python's json: RecursionError


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A valid packed 4-bit ResNet-20 (apot export of a randomized model)."""
    folder = tmp_path_factory.mktemp("packed")
    model, checkpoint, description = write_checkpoint(folder)
    path = folder / "good.safetensors"
    export_packed(model, description, 10, checkpoint, path)
    return path


def safetensors_bytes(tensors: dict[str, tuple[str, list[int], bytes]],
                      metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file written by hand (as another tool could): ``tensors`` maps each key
    to (dtype name, shape, raw little-endian bytes)."""
    header: dict = {"__metadata__": metadata} if metadata is not None else {}
    data = bytearray()
    for key, (dtype, shape, raw) in tensors.items():
        header[key] = {"dtype": dtype, "shape": shape,
                       "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + bytes(data)


def by_hand(good, edit=None, header_text=None) -> bytes:
    """The good file's tensors and apot header (or ``header_text``) written by
    ``safetensors_bytes``, after ``edit(tensors)`` (tensors: key -> [dtype name, shape, raw
    bytes])."""
    header, arrays = read_packed(good)
    tensors = {key: [SAFETENSORS_NAMES[a.dtype], list(a.shape), a.tobytes()]
               for key, a in arrays.items()}
    if edit:
        edit(tensors)
    text = json.dumps(header) if header_text is None else header_text
    return safetensors_bytes(tensors, {HEADER_KEY: text})


# ----------------------------------------------------------------- how each hostile file is made
# Each maker takes the good file and the path to write, and returns that path.

def raw_file(data_of):
    """A file of the bytes ``data_of(good)`` returns."""
    def build(good, out):
        out.write_bytes(data_of(good))
        return out
    return build


def header_bytes(text: bytes, length: int | None = None):
    """A file of a header length (default: the text's), then ``text``, and no tensors."""
    return raw_file(lambda good: (len(text) if length is None else length).to_bytes(8, "little")
                    + text)


def apot_header_text(text):
    """The good tensors with ``text`` as the apot header."""
    return raw_file(lambda good: by_hand(good, header_text=text))


def to_bfloat16(key):
    """The good file written by hand with float32 tensor ``key`` as bfloat16 (the top 2 bytes
    of each value), as another tool could write it."""
    def edit(tensors):
        values = np.frombuffer(tensors[key][2], np.float32).view(np.uint32)
        tensors[key][0], tensors[key][2] = "BF16", (values >> 16).astype(np.uint16).tobytes()
    return raw_file(lambda good: by_hand(good, edit))


def relabel(key, dtype=None, shape=None):
    """The good file written by hand with tensor ``key``'s dtype name or shape changed in the
    safetensors header, its bytes kept."""
    def edit(tensors):
        tensors[key][0] = dtype or tensors[key][0]
        tensors[key][1] = shape or tensors[key][1]
    return raw_file(lambda good: by_hand(good, edit))


def header_edit(edit):
    """The good file with ``edit(header)`` applied to its apot header."""
    return lambda good, out: rewrite(good, out, edit_header=edit)


def arrays_edit(edit):
    """The good file with ``edit(arrays)`` applied to its arrays."""
    return lambda good, out: rewrite(good, out, edit_arrays=edit)


def set_layer(name, **fields):
    return header_edit(lambda h: h["layers"][name].update(fields))


def set_array(key, value, dtype=np.float32):
    return arrays_edit(lambda arrays: arrays.__setitem__(key, np.array(value, dtype)))


def set_element(key, value):
    """The good file with the first value of array ``key`` set to ``value``."""
    def edit(arrays):
        arrays[key] = arrays[key].copy()
        arrays[key].flat[0] = value
    return arrays_edit(edit)


# case -> (how the file is made, what the one line must say besides the file and the fix)
CASES = {
    # the safetensors layer
    "oversized header length": (header_bytes(b"{}", 1 << 40),
                                ["truncated or not a safetensors file", "1099511627776 bytes"]),
    "header length past the end": (header_bytes(b"{}", 4096),
                                   ["truncated or not a safetensors file", "4096 bytes"]),
    "safetensors header nested 200,000 deep": (header_bytes(NESTED.encode()),
                                               [f"header nests deeper than {MAX_JSON_DEPTH}"]),
    "safetensors header not JSON": (header_bytes(b"{'a': 1}"), ["its header is not JSON"]),
    "safetensors header a list": (header_bytes(b"[]"), ["its header is not a JSON object"]),
    "tensor entry without offsets": (header_bytes(b'{"w": {"dtype": "F32", "shape": [1]}}'),
                                     ["tensor w's entry is not"]),
    "truncated file": (raw_file(lambda good: good.read_bytes()[:-100]),
                       ["is truncated or not a safetensors file", "its tensors end at"]),
    "bytes after the last tensor": (raw_file(lambda good: good.read_bytes() + bytes(16)),
                                    ["16 bytes follow its last tensor"]),
    "overlapping tensors": (raw_file(lambda good: safetensors_bytes(
        {"a": ("F32", [1], bytes(4)), "b": ("F32", [1], bytes(4))}).replace(
            b'"data_offsets": [4, 8]', b'"data_offsets": [0, 4]')),
        ["tensor b's data_offsets start at 0, not at 4"]),
    "bf16 file of another tool": (raw_file(lambda good: safetensors_bytes(
        {"weight": ("BF16", [2], bytes(4))})), ["has no apot header"]),
    # the apot header
    "apot header nested 200,000 deep": (apot_header_text(NESTED),
                                        [f"apot header nests deeper than {MAX_JSON_DEPTH}"]),
    "apot header over 1 MiB": (apot_header_text(json.dumps({"pad": "x" * MAX_APOT_HEADER_BYTES})),
                               [f"over the {MAX_APOT_HEADER_BYTES}"]),
    "apot header not JSON": (apot_header_text("{format: 1}"), ["apot header is not JSON"]),
    "arch as a list": (header_edit(lambda h: h.update(arch=["resnet20"])),
                       ["header field 'arch'", "['resnet20']", "resnet20, "]),
    "arch as a dict": (header_edit(lambda h: h.update(arch={"resnet20": 1})),
                       ["header field 'arch'", "{'resnet20': 1}"]),
    "scheme as a list": (header_edit(lambda h: h.update(scheme=["apot"])),
                         ["header field 'scheme'"]),
    "first_last as a dict": (header_edit(lambda h: h.update(first_last={})),
                             ["header field 'first_last'"]),
    "bits as a bool": (header_edit(lambda h: h.update(bits=True)), ["header field 'bits'", "True"]),
    "k as a string": (header_edit(lambda h: h.update(k="2")), ["header field 'k'", "'2'"]),
    "version as a bool": (header_edit(lambda h: h.update(version=True)), ["format version True"]),
    "num_classes 10**7": (header_edit(lambda h: h.update(num_classes=10**7)),
                          ["header field 'num_classes'", "10000000", str(MAX_CLASSES)]),
    "num_classes 10**9": (header_edit(lambda h: h.update(num_classes=10**9)),
                          ["header field 'num_classes'", "1000000000"]),
    "num_classes a float": (header_edit(lambda h: h.update(num_classes=10.0)),
                            ["header field 'num_classes'", "10.0"]),
    "num_classes not the last layer's outputs": (header_edit(lambda h: h.update(num_classes=100)),
                                                 ["layer fc has shape [10, 64]: 10 outputs",
                                                  "'num_classes' is 100"]),
    "layers as a list": (header_edit(lambda h: h.update(layers=[])), ["header field 'layers'"]),
    "layer record a string": (header_edit(lambda h: h["layers"].update(fc="x")),
                              ["layer fc is 'x', not a record"]),
    "unknown layer kind": (set_layer("layer1.0.conv1", kind="conv"),
                           ["layer layer1.0.conv1 has kind 'conv'", "quant_conv"]),
    "kind as a list": (set_layer("fc", kind=["eight_bit_linear"]),
                       ["layer fc has kind ['eight_bit_linear']"]),
    "negative shape": (set_layer("fc", shape=[10, -64]), ["layer fc has shape [10, -64]"]),
    "shape of bools": (set_layer("layer1.0.conv1", shape=[True, 16, 3, 3]),
                       ["layer layer1.0.conv1 has shape [True, 16, 3, 3]"]),
    "long shape": (set_layer("fc", shape=[10] + [1] * 20), ["layer fc has shape", "at most"]),
    "width as a string": (set_layer("layer1.0.conv1", width="4"),
                          ["layer layer1.0.conv1 has width '4'", "width 4, an integer"]),
    "width as a bool": (set_layer("layer1.0.conv1", width=True),
                        ["layer layer1.0.conv1 has width True"]),
    "width other than bits": (set_layer("layer1.0.conv1", width=3),
                              ["layer layer1.0.conv1 has width 3"]),
    "a record's shape unlike the model's": (
        set_layer("layer1.0.conv1", shape=[16, 16, 1, 9]),  # as many weights: the codes fit
        ["layer layer1.0.conv1 has shape [16, 16, 1, 9], the model [16, 16, 3, 3]"]),
    "layers of another model": (header_edit(lambda h: h.update(arch="resnet32")),
                                ["layers are not those of the model its header describes",
                                 "layer1.3.conv1 is absent in the file, quant_conv in a resnet32"]),
    # tensors against the records and the model
    "bf16 float part": (to_bfloat16("bn1.weight"),
                        ["tensor bn1.weight has dtype BF16", "U8, I8, I16, F32"]),
    "float64 alpha": (relabel("layer1.0.conv1.act_alpha", dtype="F64"),
                      ["tensor layer1.0.conv1.act_alpha has dtype F64"]),
    "byte size unlike the shape": (relabel("bn1.bias", shape=[17]),
                                   ["tensor bn1.bias of shape [17] and dtype F32 is 68 bytes"]),
    "quantized codes as floats": (set_array("layer1.0.conv1.codes", np.zeros(288)),
                                  ["tensor layer1.0.conv1.codes is F32", "U8"]),
    "quantized codes too long": (set_array("layer1.0.conv1.codes", np.zeros(1153), np.uint8),
                                 ["need 1152 bytes, got 1153"]),
    "8-bit codes as uint8": (set_array("fc.codes", np.zeros((10, 64)), np.uint8),
                             ["tensor fc.codes is U8", "I8 or I16"]),
    "8-bit codes unlike their record": (set_array("fc.codes", np.zeros((10, 63)), np.int8),
                                        ["tensor fc.codes has shape [10, 63]", "[10, 64]"]),
    "float part unlike the model": (set_array("bn1.weight", np.ones(17)),
                                    ["tensor bn1.weight has shape [17], the model [16]"]),
    "float part as int8": (set_array("bn1.weight", np.ones(16), np.int8),
                           ["tensor bn1.weight is I8", "F32"]),
    "alpha of two values": (set_array("layer1.0.conv1.weight_alpha", [1.0, 2.0]),
                            ["tensor layer1.0.conv1.weight_alpha", "one F32 value"]),
    "missing alpha": (arrays_edit(lambda a: a.pop("layer1.0.conv1.act_alpha")),
                      ["it has no tensor layer1.0.conv1.act_alpha"]),
    "missing float part": (arrays_edit(lambda a: a.pop("layer1.0.bn1.running_var")),
                           ["lacks tensors of the model: layer1.0.bn1.running_var"]),
    "extra tensor": (set_array("stowaway", [1.0]), ["tensors the model does not: stowaway"]),
    "key with a newline": (set_array("a\nb", [1.0]), ["tensors the model does not: a\\nb"]),
    # values
    "weight alpha -1e38": (set_array("layer1.0.conv1.weight_alpha", [-1e38]),
                           ["tensor layer1.0.conv1.weight_alpha is -9.99", "finite and > 0"]),
    "zero weight alpha": (set_array("layer2.1.conv2.weight_alpha", [0.0]),
                          ["tensor layer2.1.conv2.weight_alpha is 0.0"]),
    "NaN act alpha": (set_array("layer2.0.conv1.act_alpha", [np.nan]),
                      ["tensor layer2.0.conv1.act_alpha is nan", "finite and > 0"]),
    "inf act alpha": (set_array("layer2.0.conv1.act_alpha", [np.inf]),
                      ["tensor layer2.0.conv1.act_alpha is inf"]),
    "zero 8-bit scale": (set_array("fc.scale", [0.0]), ["tensor fc.scale is 0.0", "non-zero"]),
    "NaN 8-bit scale": (set_array("conv1.scale", [np.nan]), ["tensor conv1.scale is nan"]),
    "NaN running_mean": (set_element("bn1.running_mean", np.nan),
                         ["tensor bn1.running_mean holds nan", "finite"]),
    "inf running_mean": (set_element("layer3.0.bn2.running_mean", -np.inf),
                         ["tensor layer3.0.bn2.running_mean holds -inf"]),
    "negative running_var": (set_element("layer1.0.bn1.running_var", -1.0),
                             ["tensor layer1.0.bn1.running_var holds -1.0", ">= 0"]),
    "NaN batch-norm weight": (set_element("layer2.0.bn1.weight", np.nan),
                              ["tensor layer2.0.bn1.weight holds nan"]),
    "inf bias": (set_element("fc.bias", np.inf), ["tensor fc.bias holds inf"]),
}

# The cases where memory or recursion is the risk: also run in a child process, measured.
MEASURED = ["oversized header length", "safetensors header nested 200,000 deep",
            "apot header nested 200,000 deep", "num_classes 10**7", "num_classes 10**9",
            "bf16 file of another tool"]


def assert_one_line_refusal(stderr: str, path, expected: list[str]) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("apot eval: error: "), line
    assert str(path) in line and "export it again with apot export" in line, line
    for text in expected:
        assert text in line, line


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_packed_file_ends_in_one_line_naming_the_problem(good, tmp_path, capsys,
                                                                     synthetic_data, case):
    build, expected = CASES[case]
    bad = build(good, tmp_path / "bad.safetensors")
    code = main(["eval", "--packed", str(bad), "--data", str(synthetic_data)])
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert_one_line_refusal(stderr, bad, expected)


# ``python -m apot`` that writes its own peak resident memory (VmHWM, KiB) to the file named by
# APOT_PEAK_FILE when it exits. The child's ru_maxrss (wait4) is no measure: Linux keeps the
# high-water mark across exec, so a child forked from a large pytest process reports the
# parent's size; VmHWM belongs to the memory map exec made.
PEAK_REPORTING_APOT = """
import atexit, os, runpy, sys
def peak():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["APOT_PEAK_FILE"], "w") as out:
        out.write(kib)
atexit.register(peak)
sys.argv[0] = "apot"
runpy.run_module("apot", run_name="__main__", alter_sys=True)
"""


def run_measured(tmp_path, *args) -> tuple[int, str, int]:
    """(exit code, stderr, peak resident memory in KiB) of ``python -m apot ARGS``."""
    peak = tmp_path / "peak-kib"
    done = subprocess.run([sys.executable, "-c", PEAK_REPORTING_APOT, *map(str, args)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "APOT_PEAK_FILE": str(peak)}, timeout=300)
    return done.returncode, done.stderr, int(peak.read_text())


@pytest.mark.parametrize("case", MEASURED)
def test_a_hostile_packed_file_is_refused_in_bounded_memory(good, tmp_path, synthetic_data,
                                                            case):
    build, expected = CASES[case]
    bad = build(good, tmp_path / "bad.safetensors")
    code, stderr, peak_kib = run_measured(tmp_path, "eval", "--packed", bad, "--data",
                                          synthetic_data)
    assert code == 2, stderr
    assert_one_line_refusal(stderr, bad, expected)
    assert peak_kib < MEMORY_LIMIT_KIB, f"{peak_kib} KiB resident"


def test_the_files_the_cases_start_from_are_valid(good, tmp_path, capsys, synthetic_data):
    """Controls: the good file evaluates, and so does its copy written by hand, so every
    refusal above comes from the one thing each case changed."""
    copy = raw_file(by_hand)(good, tmp_path / "copy.safetensors")
    for path in (good, copy):
        code = main(["eval", "--packed", str(path), "--data", str(synthetic_data)])
        assert code == 0, capsys.readouterr().err
    model, _ = load_packed(copy)
    original, _ = load_packed(good)
    with torch.no_grad():
        assert torch.equal(model(INPUT), original(INPUT))


def test_unpack_names_the_layer_whose_width_is_wrong():
    arrays, layers = pack_model(randomized_model(4))
    layers["layer1.0.conv1"]["width"] = "4"
    with pytest.raises(ValueError, match=r"layer layer1\.0\.conv1 has codes of width '4'"):
        unpack_model(build_model("resnet20", 10, 4), arrays, layers, APOT, 2)


@pytest.mark.parametrize("text,deeper", [
    ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, False),
    ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), True),
    ('{"a": [{"b": [[[[[[[]]]]]]]}]}', True),
    ('["[[[[[[[[[[{{{{{{{{"]', False),  # brackets inside a string do not nest
    (r'["\"[[[[[[[[[[", "\\"]', False),  # nor after an escaped quote
    ('["\\\\", [[[[[[[[[]]]]]]]]]', True),  # an escaped backslash ends before the quote
])
def test_nesting_is_counted_outside_strings(text, deeper):
    assert nesting_exceeds(text, MAX_JSON_DEPTH) is deeper


def test_nesting_scan_is_linear_on_unterminated_strings():
    """An unterminated string is one token to the end: a scanner that started again at each
    of its 200,000 escaped quotes would take minutes (counted in tokens, not timed)."""
    from apot.deploy.packed_file import _JSON_TOKEN
    text = '"' + '\\"' * 200_000
    assert not nesting_exceeds(text, MAX_JSON_DEPTH)
    assert [match.span() for match in _JSON_TOKEN.finditer(text)] == [(0, len(text))]


# ----------------------------------------------------------------- the export record beside a file

@pytest.fixture
def exported(tmp_path):
    """A packed file and its export record, as the workflow writes them in a run folder."""
    model, checkpoint, description = write_checkpoint(tmp_path)
    args = ["export", "--arch", "resnet20", "--bits", "4", "--checkpoint", str(checkpoint),
            "--out", str(tmp_path / "packed.safetensors"), "--result", str(tmp_path / "packed.json")]
    assert main(args) == 0
    return tmp_path / "packed.safetensors"


def flip_bit(path, offset_from_end: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x10  # a weight code: the file still parses
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, words", [
    (flip_bit, "packed.safetensors changed since it was written (sha256 differs)"),
    (lambda p: p.write_bytes(p.read_bytes()[:-7]), "packed.safetensors has "),
])
def test_a_packed_file_that_differs_from_its_record_is_refused(exported, synthetic_data, capsys,
                                                               damage, words):
    """A flipped bit would evaluate without a sign, and a truncated file could too: the
    packed.json beside the file records its size and sha256, and apot eval checks them."""
    from apot.storage.integrity import check_packed
    record = json.loads(exported.with_name("packed.json").read_text())
    assert record["packed_sha256"] and check_packed(exported.parent) == []
    damage(exported)
    assert check_packed(exported.parent) and words in check_packed(exported.parent)[0]
    assert main(["eval", "--packed", str(exported), "--data", str(synthetic_data)]) == 2
    err = capsys.readouterr().err
    assert_one_line_refusal(err, exported, [words, "packed.json"])


def test_a_record_of_another_file_or_none_is_not_a_refusal(exported, synthetic_data, capsys,
                                                          tmp_path):
    """The record is checked only for the file it names: a copy under another name, or a file
    without a record, is read as it is (its header and tensors are still checked)."""
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(exported.read_bytes())
    flip_bit(exported)
    assert main(["eval", "--packed", str(copy), "--data", str(synthetic_data)]) == 0
    exported.with_name("packed.json").unlink()
    assert main(["eval", "--packed", str(exported), "--data", str(synthetic_data)]) == 0
    capsys.readouterr()


def test_a_record_without_the_sha256_is_redone(exported):
    """A packed.json from before the sha256 was recorded fails the workflow's check: the
    workflow exports the run again."""
    from apot.storage.integrity import check_packed
    record_path = exported.with_name("packed.json")
    record = json.loads(record_path.read_text())
    del record["packed_sha256"]
    record_path.write_text(json.dumps(record))
    assert check_packed(exported.parent) == [
        "packed.json records no sha256 of packed.safetensors (written before apot recorded it)"]
