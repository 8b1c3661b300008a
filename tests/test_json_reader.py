"""The C++ manifest reader (csrc/sampler/json.cpp): locale independence, ``\\u`` escapes, and a
seeded fuzz with random and truncated manifests, checked against Python's json module.

The reader has no torch dependency, so tests/cpp/json_check.cpp drives it from a small executable
built here with the system compiler (with AddressSanitizer/UBSan where the compiler has them): a
host program's ``setlocale`` can only be set from C++, and a crash in the fuzz shows as a failed
process instead of taking pytest down.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import seed_of

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "tests" / "cpp" / "json_check.cpp", ROOT / "csrc" / "sampler" / "json.cpp"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


def _compiler() -> str | None:
    cxx = os.environ.get("CXX")
    if cxx and shutil.which(cxx.split()[0]):
        return cxx
    return shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


@pytest.fixture(scope="module")
def json_check(tmp_path_factory) -> Path:
    cxx = _compiler()
    if cxx is None:
        pytest.skip("needs a C++ compiler (g++ or clang++) to build tests/cpp/json_check.cpp")
    exe = tmp_path_factory.mktemp("json_check") / "json_check"
    base = [*cxx.split(), "-std=c++20", "-O0", "-g", "-Wall", "-Wextra"]
    base += [f"-I{ROOT / 'csrc' / 'sampler'}", *map(str, SOURCES), "-o", str(exe)]
    # Sanitizers if this compiler has them (libasan/libubsan), else a plain build.
    for extra in (SANITIZE, []):
        r = subprocess.run([*base[:1], *extra, *base[1:]], capture_output=True, text=True)
        if r.returncode == 0:
            return exe
    pytest.fail(f"json_check did not compile:\n{r.stderr[-3000:]}")


def _run_cases(exe: Path, docs: list[str], tmp_path: Path) -> list[str]:
    """Each document through json::parse; one result line per document."""
    f = tmp_path / "cases.bin"
    f.write_bytes(b"\0".join(d.encode() for d in docs))
    r = subprocess.run([str(exe), "cases", str(f)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"json_check crashed (rc {r.returncode}):\n{r.stderr[-3000:]}"
    lines = r.stdout.splitlines()
    assert len(lines) == len(docs)
    return lines


def test_numbers_do_not_depend_on_the_c_locale(json_check, tmp_path):
    # A ',' decimal locale, compiled here from the system's locale sources (no root needed).
    localedef = shutil.which("localedef")
    if localedef is None:
        pytest.skip("needs localedef (glibc) to make a de_DE locale")
    r = subprocess.run(
        [localedef, "-i", "de_DE", "-f", "UTF-8", str(tmp_path / "de_DE.UTF-8")],
        capture_output=True,
        text=True,
    )
    if not (tmp_path / "de_DE.UTF-8").exists():
        pytest.skip(f"localedef could not make de_DE.UTF-8: {r.stderr.strip()[:200]}")
    env = dict(os.environ, LOCPATH=str(tmp_path))
    r = subprocess.run(
        [str(json_check), "locale", "de_DE.UTF-8"], capture_output=True, text=True, env=env
    )
    assert 'strtod("0.5") = 0\n' in r.stdout, r.stdout  # the locale is in effect: strtod is fooled
    assert r.returncode == 0 and "-> ok" in r.stdout, r.stdout + r.stderr


BAD_ESCAPES = {
    r'"\uzzzz"': "bad \\u escape (non-hex digit) at offset 3",
    r'"\u12g4"': "bad \\u escape (non-hex digit) at offset 5",
    r'"\u-123"': "bad \\u escape (non-hex digit) at offset 3",
    r'"\u12"': "truncated \\u escape (needs 4 hex digits) at offset 3",
    '"\\u': "truncated \\u escape (needs 4 hex digits) at offset 3",
    r'"\ud800"': "lone high surrogate in \\u escape",
    r'"\ud800x"': "lone high surrogate in \\u escape",
    r'"\ud800\u0041"': "lone high surrogate in \\u escape",
    r'"\udc00"': "lone low surrogate in \\u escape",
    r'"\q"': "bad escape '\\q' at offset 2",
}


def test_bad_unicode_escapes_are_refused(json_check, tmp_path):
    got = _run_cases(json_check, list(BAD_ESCAPES), tmp_path)
    for (doc, want), line in zip(BAD_ESCAPES.items(), got, strict=True):
        assert line.startswith("error: invalid JSON: ") and want in line, (doc, line)


GOOD = [
    r'"caf\u00e9 \u20ac \ud83d\ude00 \"q\" \\ \/ \n\t"',
    r'"C:\\exports\\run 1\/denoiser.pt2"',
    "0.5",
    "-0.0",
    "1e-05",
    "2.5E+3",
    "123456789012345678901234567890",
    "5e-324",
    "1.7976931348623157e308",
    "0.1",
    "1e-400",
    "-2e-324",
]


def test_valid_strings_and_numbers_match_python(json_check, tmp_path):
    for doc, line in zip(GOOD, _run_cases(json_check, GOOD, tmp_path), strict=True):
        want = json.loads(doc)
        if isinstance(want, str):
            assert line == "ok string " + want.encode().hex(), doc
        else:
            assert line.startswith("ok number "), (doc, line)
            assert float(line.split()[-1]) == float(want), (doc, line)  # %.17g round-trips


@pytest.mark.parametrize(
    "doc",
    ["01", "1.", ".5", "+1", "1e", "1e+", "-", "0x10", "1e400", "-1e400", "NaN", "Infinity", "inf"],
)
def test_malformed_numbers_are_refused(json_check, tmp_path, doc):
    (line,) = _run_cases(json_check, [doc], tmp_path)
    assert line.startswith("error: invalid JSON: "), line


def _manifest() -> str:
    """A document shaped like the one kldm export writes (kspace_ldm/export.py)."""
    m = {
        "format": "kspace-ldm-export",
        "format_version": 1,
        "kspace_ldm_version": "0.1.0",
        "torch_version": "2.13.0",
        "device": "cpu",
        "dynamic_batch": True,
        "batch": 2,
        "coils": 1,
        "height": 24,
        "width": 19,
        "latent_shape": [4, 6, 5],
        "first_stage": {"family": "KAutoencoder", "is_kl": True, "downsample": 4},
        "normalization": {"mode": "standardize", "acs_fraction": 0.08, "eps": 1e-08},
        "norm_ratio": {"scale": None, "shift": -0.25},
        "scale_factor": 0.18215,
        "scheduler": {"ddpm_step": {"noise_std": [0.0, 0.0123, 0.5, 1e-05]}},
        "source_run": "runs/d\u00e9mo \u2014 1",
        "packages": {"denoiser": {"file": "denoiser.pt2", "batch_range": [1, 8]}},
    }
    return json.dumps(m, indent=1)


ALPHABET = '{}[]:,"\\ \n\t0123456789.eE+-truefalsnu' + "abcdxyz\x01\x7f/"


def _fuzz_cases(rng: random.Random) -> list[str]:
    text = _manifest()
    cases = [text[:n] for n in range(0, len(text), 3)]  # truncations (every third length)
    for _ in range(200):  # random edits of the manifest
        s = list(text)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(s))
            op = rng.random()
            if op < 0.4:
                s[i] = rng.choice(ALPHABET)
            elif op < 0.7:
                del s[i]
            else:
                s.insert(i, rng.choice(ALPHABET + "\\u"))
        cases.append("".join(s))
    for _ in range(150):  # random token soup
        n = rng.randint(1, 40)
        cases.append("".join(rng.choice(ALPHABET) for _ in range(n)))
    cases += ["[" * 65 + "]" * 65, "[" * 64 + "]" * 64, '{"a":' * 80, "[" * 10000]
    return cases


def _python_accepts(doc: str) -> bool:
    """Python's json module as the reference, with the reader's documented refusals: non-finite
    numbers, lone surrogates and nesting deeper than 64 (control characters in strings are
    accepted by both: strict=False)."""
    try:
        v = json.loads(doc, strict=False)
    except (ValueError, RecursionError):
        return False

    def ok(x, depth: int) -> bool:
        if isinstance(x, float):
            return math.isfinite(x)
        if isinstance(x, str):
            return not any(0xD800 <= ord(c) <= 0xDFFF for c in x)
        if isinstance(x, (list, dict)):
            if depth >= 64:
                return False
            items = x.values() if isinstance(x, dict) else x
            return all(ok(k, depth) for k in (x if isinstance(x, dict) else [])) and all(
                ok(i, depth + 1) for i in items
            )
        return True

    return ok(v, 0)


def test_fuzz_random_and_truncated_manifests(json_check, tmp_path):
    rng = random.Random(seed_of("json-fuzz"))
    cases = _fuzz_cases(rng)
    assert len(cases) > 500
    lines = _run_cases(json_check, cases, tmp_path)
    n_ok = 0
    for doc, line in zip(cases, lines, strict=True):
        if line.startswith("ok"):
            n_ok += 1
            assert _python_accepts(doc), (doc, line)
        else:
            # One clear message: what is wrong and where; never another exception type.
            assert line.startswith("error: invalid JSON: ") and " at offset " in line, (doc, line)
            assert not _python_accepts(doc), (doc, line)
    assert n_ok >= 1 and n_ok < len(cases)  # both outcomes were exercised


def test_broken_manifests_through_the_sampler_are_one_line_errors(tmp_path):
    # The real entry point: kldm::Sampler reading <dir>/manifest.json (kspace_ldm._C).
    from kspace_ldm.errors import InputError
    from kspace_ldm.sampling.cpp import CppSampler

    text = _manifest()
    rng = random.Random(seed_of("json-fuzz-sampler"))
    for n in sorted(rng.sample(range(len(text)), 20)):
        (tmp_path / "manifest.json").write_text(text[:n])
        with pytest.raises(InputError, match=r"manifest\.json: invalid JSON: .* at offset \d+$"):
            CppSampler(tmp_path)
    (tmp_path / "manifest.json").write_text(text.replace("d\\u00e9mo", "d\\u00zzmo"))
    with pytest.raises(InputError, match=r"bad \\u escape \(non-hex digit\)"):
        CppSampler(tmp_path)
