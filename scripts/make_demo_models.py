#!/usr/bin/env python3
"""Build (and always verify) the demo NLA pair (AV + AR) from the Gemma 3 270M test checkpoint and the
fixtures in Tests/Fixtures/nla-demo, without PyTorch (numpy + the standard library only).

Normally run through `scripts/make-demo-models`, which provides the venv and the test checkpoint
(scripts/make-test-model). Output: $NLA_DEMO_DIR, default $NLA_CACHE/models/nla-demo (NLA_CACHE default
~/.cache/nla):

    av/  config.json generation_config.json model.safetensors special_tokens_map.json tokenizer.json
         tokenizer_config.json      <- the test checkpoint's files, unchanged
         nla_meta.yaml              <- Tests/Fixtures/nla-demo/av/nla_meta.yaml
    ar/  config.json                <- Tests/Fixtures/nla-demo/ar/config.json (13 blocks)
         model.safetensors          <- model.embed_tokens.weight + model.layers.0-12.* + model.norm.weight,
                                       bytes copied verbatim from the test checkpoint, metadata {"format":"pt"}
         value_head.safetensors     <- Tests/Fixtures/nla-demo/ar/value_head.safetensors (`weight` BF16 [640,640])
         nla_meta.yaml              <- Tests/Fixtures/nla-demo/ar/nla_meta.yaml
         generation_config.json special_tokens_map.json tokenizer.json tokenizer_config.json  <- test checkpoint
    .nla-verified                   stamp, written only after verification passed (key=value lines)

Files taken unchanged from the test checkpoint that are larger than 1 MiB (model.safetensors, tokenizer.json)
are HARD LINKS to the test checkpoint's files when both live on one filesystem (else copies; --copy forces
copies). make-test-model never rewrites a file in place (it builds a new directory and renames it), so a
rebuilt test model leaves the demo pair's inodes untouched. Do not edit those files in place.

Verification (AR): every file listed in the AR manifest (Tests/Fixtures/nla-demo/ar_MANIFEST.json, override
NLA_DEMO_MANIFEST; format {"<file>.safetensors": [{name, shape, dtype, nbytes, sha256}, ...]}) must hold
exactly those tensors with those shapes, dtypes, sizes and sha256 of the raw bytes, metadata {"format":"pt"},
contiguous data, no trailing bytes. (AV): model.safetensors against the test-model manifest
(Tests/Fixtures/gemma-3-270m-MANIFEST.json, override NLA_MANIFEST). Both: side files byte-equal to their
sources, configs consistent with the sidecars (d_model == hidden_size, AR blocks == K+1, AR config == test
config truncated).
A build happens in a temporary directory beside the output, is verified there and renamed into place; on
failure nothing is left at the output path.

Re-runs: with a stamp for the same inputs (fixtures, manifests, builder version) the build is skipped and a
cheap re-verification runs: headers vs manifests (names/shapes/dtypes/offsets), file sizes and mtimes vs the
stamp, sha256 of every file except the two model.safetensors (value head, tokenizer, configs, sidecars).
--full-verify also re-hashes every tensor. If the cheap check fails, the pair is rebuilt.

Modes: (default) build unless a matching stamp exists, then verify; --verify-only: verify the existing output
(exit 1 if missing or different); --force: rebuild.
"""

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from nla_build_common import VerifyError, safetensors_header, sha256_file

BUILDER_VERSION = "1"
STAMP = ".nla-verified"
REPO = Path(__file__).resolve().parent.parent
LINK_MIN_BYTES = 1 << 20

CHECKPOINT_FILES = ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
                    "tokenizer.json", "tokenizer_config.json"]
AR_FROM_CHECKPOINT = ["generation_config.json", "special_tokens_map.json", "tokenizer.json",
                      "tokenizer_config.json"]
AR_FROM_FIXTURES = ["config.json", "value_head.safetensors", "nla_meta.yaml"]
AV_FROM_FIXTURES = ["nla_meta.yaml"]
SAFETENSORS_META = {"format": "pt"}


def log(*a):
    print("[make-demo-models]", *a, file=sys.stderr, flush=True)




# ------------------------------------------------------------------------------------- safetensors
def read_header(path):
    """-> (header_len, metadata, [(name, dtype, shape, begin, end)] sorted by offset). Checks that the data
    is contiguous from offset 0 and that the file ends exactly after the last tensor."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n <= 0 or 8 + n > size:
            raise VerifyError(f"{path}: bad header length {n}")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise VerifyError(f"{path}: header is not JSON ({e})")
    meta = header.pop("__metadata__", None)
    entries = sorted(((k, v["dtype"], list(v["shape"]), *v["data_offsets"]) for k, v in header.items()),
                     key=lambda e: (e[3], e[4]))
    pos = 0
    for name, _, _, a, b in entries:
        if a != pos or b < a:
            raise VerifyError(f"{path}: tensor {name} data_offsets [{a}, {b}] not contiguous (expected start {pos})")
        pos = b
    if 8 + n + pos != size:
        raise VerifyError(f"{path}: {size - 8 - n - pos} bytes after the last tensor (or missing)")
    return n, meta, entries



DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I8": 1, "U8": 1, "I16": 2, "I32": 4, "I64": 8, "BOOL": 1}


def verify_safetensors(path, expected, want_meta, full, label):
    """expected: [{name, shape, dtype, sha256, nbytes?}]. Returns (problems, n_tensors, n_bytes_hashed)."""
    problems = []
    try:
        n, meta, entries = read_header(path)
    except (OSError, VerifyError) as e:
        return [f"{label}: {e}"], 0, 0
    if meta != want_meta:
        problems.append(f"{label}: safetensors metadata {meta} != {want_meta}")
    got = {e[0]: e for e in entries}
    want = {t["name"]: t for t in expected}
    if len(want) != len(expected):
        problems.append(f"{label}: manifest lists a tensor twice")
    for name in sorted(set(want) - set(got)):
        problems.append(f"{label}: missing tensor {name}")
    for name in sorted(set(got) - set(want)):
        problems.append(f"{label}: unexpected tensor {name}")
    hashed = 0
    mm = None
    if full:
        import numpy as np
        mm = np.memmap(path, dtype=np.uint8, mode="r") if os.path.getsize(path) > 0 else None
    for name in sorted(set(want) & set(got)):
        _, dtype, shape, a, b = got[name]
        w = want[name]
        diffs = []
        if dtype != w["dtype"]:
            diffs.append(f"dtype {dtype} != {w['dtype']}")
        if shape != list(w["shape"]):
            diffs.append(f"shape {shape} != {w['shape']}")
        elems = 1
        for d in shape:
            elems *= d
        if dtype in DTYPE_BYTES and elems * DTYPE_BYTES[dtype] != b - a:
            diffs.append(f"{b - a} bytes for {dtype} {shape}")
        if "nbytes" in w and b - a != w["nbytes"]:
            diffs.append(f"nbytes {b - a} != {w['nbytes']}")
        if full:
            h = hashlib.sha256(mm[8 + n + a: 8 + n + b]).hexdigest()
            hashed += b - a
            if h != w["sha256"]:
                diffs.append(f"sha256 {h[:16]}… != {w['sha256'][:16]}…")
        if diffs:
            problems.append(f"{label}: tensor {name}: " + "; ".join(diffs))
    del mm
    return problems, len(got), hashed


# ------------------------------------------------------------------------------------------ inputs
class Inputs:
    def __init__(self, args):
        self.src = args.test_model.expanduser().absolute()
        self.fixtures = args.fixtures.expanduser().absolute()
        self.ar_manifest_path = args.ar_manifest.expanduser().absolute()
        self.test_manifest_path = args.test_manifest.expanduser().absolute()
        for p in (self.ar_manifest_path, self.test_manifest_path):
            if not p.is_file():
                raise SystemExit(f"manifest not found: {p}")
        ar_bytes = self.ar_manifest_path.read_bytes()
        tm_bytes = self.test_manifest_path.read_bytes()
        self.ar_manifest_sha = hashlib.sha256(ar_bytes).hexdigest()
        self.test_manifest_sha = hashlib.sha256(tm_bytes).hexdigest()
        try:
            self.ar_manifest = json.loads(ar_bytes)
            self.test_manifest = json.loads(tm_bytes)
        except ValueError as e:
            raise SystemExit(f"manifest is not JSON: {e}")
        if not isinstance(self.ar_manifest, dict) or not all(
                k.endswith(".safetensors") and isinstance(v, list) for k, v in self.ar_manifest.items()):
            raise SystemExit(f"{self.ar_manifest_path}: expected {{\"<file>.safetensors\": [tensor, ...]}}")
        if "model.safetensors" not in self.ar_manifest:
            raise SystemExit(f"{self.ar_manifest_path}: no entry for model.safetensors")
        self.fixture_files = {f"av/{f}": self.fixtures / "av" / f for f in AV_FROM_FIXTURES}
        self.fixture_files.update({f"ar/{f}": self.fixtures / "ar" / f for f in AR_FROM_FIXTURES})
        missing = [str(p) for p in self.fixture_files.values() if not p.is_file()]
        if missing:
            raise SystemExit("fixture files missing: " + ", ".join(missing))
        self.fixture_sha = {k: sha256_file(p) for k, p in sorted(self.fixture_files.items())}
        h = hashlib.sha256()
        h.update(f"builder={BUILDER_VERSION}\nar_manifest={self.ar_manifest_sha}\n"
                 f"test_manifest={self.test_manifest_sha}\n".encode())
        for k, v in self.fixture_sha.items():
            h.update(f"{k}={v}\n".encode())
        self.inputs_sha = h.hexdigest()


def sidecar_scalar(text, key):
    """Minimal lookup of `key: value` in a sidecar (sanity checks only; the runtime parses YAML for real)."""
    m = re.search(rf"^\s*{re.escape(key)}:\s*(\S.*?)\s*$", text, re.M)
    return m.group(1) if m else None


# ------------------------------------------------------------------------------------------- build
def link_or_copy(src, dst, copy):
    if not copy and os.path.getsize(src) >= LINK_MIN_BYTES:
        try:
            os.link(src, dst)
            return "link"
        except OSError:
            pass
    shutil.copyfile(src, dst)
    return "copy"


def ar_tensor_names(src_entries, n_blocks):
    keep = []
    for name, *_ in src_entries:
        if name in ("model.embed_tokens.weight", "model.norm.weight"):
            keep.append(name)
        else:
            m = re.match(r"model\.layers\.(\d+)\.", name)
            if m and int(m.group(1)) < n_blocks:
                keep.append(name)
    return sorted(keep, key=lambda s: s.encode("utf-8"))


def write_ar_weights(src_path, dst_path, n_blocks):
    n, _, entries = read_header(src_path)
    by_name = {e[0]: e for e in entries}
    names = ar_tensor_names(entries, n_blocks)
    plan = [(nm, by_name[nm][1], by_name[nm][2], by_name[nm][4] - by_name[nm][3]) for nm in names]
    header = safetensors_header(plan, SAFETENSORS_META)
    total = len(header)
    with open(src_path, "rb") as fi, open(dst_path, "wb") as fo:
        fo.write(header)
        for nm in names:
            _, _, _, a, b = by_name[nm]
            fi.seek(8 + n + a)
            left = b - a
            while left:
                chunk = fi.read(min(left, 1 << 23))
                if not chunk:
                    raise SystemExit(f"{src_path}: short read in {nm}")
                fo.write(chunk)
                left -= len(chunk)
            total += b - a
    return len(names), total


def build(out, inp, copy, t0):
    parent = out.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        stage = tmp / out.name
        av, ar = stage / "av", stage / "ar"
        av.mkdir(parents=True)
        ar.mkdir()
        modes = {}
        for f in CHECKPOINT_FILES:
            modes[f"av/{f}"] = link_or_copy(inp.src / f, av / f, copy)
        for f in AV_FROM_FIXTURES:
            shutil.copyfile(inp.fixture_files[f"av/{f}"], av / f)
        for f in AR_FROM_FIXTURES:
            shutil.copyfile(inp.fixture_files[f"ar/{f}"], ar / f)
        for f in AR_FROM_CHECKPOINT:
            modes[f"ar/{f}"] = link_or_copy(inp.src / f, ar / f, copy)
        n_blocks = json.loads((ar / "config.json").read_text())["num_hidden_layers"]
        t1 = time.time()
        n, total = write_ar_weights(inp.src / "model.safetensors", ar / "model.safetensors", n_blocks)
        log(f"ar/model.safetensors written: {n} tensors ({n_blocks} blocks), {total:,} bytes "
            f"({time.time() - t1:.1f} s)")
        linked = [k for k, v in modes.items() if v == "link"]
        if linked:
            log(f"hard links to {inp.src}: {', '.join(linked)}")

        try:
            summary = verify_pair(stage, inp, full=True, stamp=None)
        except VerifyError as e:
            log("VERIFICATION FAILED:")
            for line in str(e).splitlines():
                print("  " + line, file=sys.stderr)
            raise
        summary["linked"] = linked
        write_stamp(stage, inp)
        old = None
        if out.exists():
            old = tmp / "old"
            os.rename(out, old)
        os.rename(stage, out)
        return summary
    except BaseException:
        if out.exists() and not stamp_matches(out, inp):
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------ verify
def output_files():
    av = [f"av/{f}" for f in CHECKPOINT_FILES + AV_FROM_FIXTURES]
    ar = [f"ar/{f}" for f in AR_FROM_FIXTURES + AR_FROM_CHECKPOINT + ["model.safetensors"]]
    return sorted(av + ar)


def fingerprint(p):
    st = os.stat(p)
    return f"{st.st_size}:{st.st_mtime_ns}"


def verify_pair(d, inp, full, stamp):
    """Raise VerifyError listing every difference, else return a summary. full: hash every tensor;
    stamp: dict of the stamp's recorded fingerprints (cheap mode checks them)."""
    problems = []
    missing = [f for f in output_files() if not (d / f).is_file()]
    if missing:
        raise VerifyError("missing files: " + ", ".join(missing))

    if stamp is not None:
        for f in output_files():
            want = stamp.get(f"file.{f}")
            if want != fingerprint(d / f):
                problems.append(f"{f}: size/mtime {fingerprint(d / f)} != stamp {want}")

    # AR weights + value head against the AR manifest
    ar_tensors = ar_bytes = 0
    for fn, expected in sorted(inp.ar_manifest.items()):
        if not (d / "ar" / fn).is_file():
            problems.append(f"ar/{fn}: listed in the AR manifest but missing")
            continue
        # the value head is small: always hashed
        p, nt, nb = verify_safetensors(d / "ar" / fn, expected, SAFETENSORS_META,
                                       full or fn != "model.safetensors", f"ar/{fn}")
        problems += p
        ar_tensors += nt
        ar_bytes += nb

    # AV weights against the test-model manifest
    want_meta = inp.test_manifest.get("safetensors_metadata", SAFETENSORS_META)
    p, av_tensors, av_bytes = verify_safetensors(d / "av" / "model.safetensors", inp.test_manifest["tensors"],
                                                 want_meta, full, "av/model.safetensors")
    problems += p

    # side files byte-equal to their sources
    for rel, src in inp.fixture_files.items():
        if sha256_file(d / rel) != inp.fixture_sha[rel]:
            problems.append(f"{rel}: differs from the fixture {src}")
    src_sha = {}
    for rel in [f"av/{f}" for f in CHECKPOINT_FILES if f != "model.safetensors"] + \
               [f"ar/{f}" for f in AR_FROM_CHECKPOINT]:
        name = rel.split("/", 1)[1]
        if name not in src_sha:
            src_sha[name] = sha256_file(inp.src / name) if (inp.src / name).is_file() else None
        got = sha256_file(d / rel)
        if src_sha[name] is not None:
            if got != src_sha[name]:
                problems.append(f"{rel}: differs from the test checkpoint's {name}")
        else:  # test checkpoint gone: fall back to the reference sha in the test manifest
            ref = inp.test_manifest.get("files", {}).get(name, {}).get("sha256")
            if ref is not None and got != ref:
                problems.append(f"{rel}: differs from the reference {name} in the test manifest")

    # configs vs sidecars
    try:
        av_cfg = json.loads((d / "av" / "config.json").read_text())
        ar_cfg = json.loads((d / "ar" / "config.json").read_text())
    except ValueError as e:
        raise VerifyError("\n".join(problems + [f"config.json is not JSON: {e}"]))
    av_meta = (d / "av" / "nla_meta.yaml").read_text()
    ar_meta = (d / "ar" / "nla_meta.yaml").read_text()
    if sidecar_scalar(av_meta, "role") not in ("av", "actor"):
        problems.append(f"av/nla_meta.yaml: role {sidecar_scalar(av_meta, 'role')!r}, expected av")
    if sidecar_scalar(ar_meta, "role") not in ("ar", "critic"):
        problems.append(f"ar/nla_meta.yaml: role {sidecar_scalar(ar_meta, 'role')!r}, expected ar")
    for name, meta, cfg in (("av", av_meta, av_cfg), ("ar", ar_meta, ar_cfg)):
        dm = sidecar_scalar(meta, "d_model")
        if dm is None or int(dm) != cfg.get("hidden_size"):
            problems.append(f"{name}: sidecar d_model {dm} != config hidden_size {cfg.get('hidden_size')}")
    k = sidecar_scalar(ar_meta, "num_hidden_layers") or sidecar_scalar(ar_meta, "extraction_layer_index") \
        or sidecar_scalar(ar_meta, "layer_index")
    n_blocks = ar_cfg.get("num_hidden_layers")
    if k is None or int(k) + 1 != n_blocks:
        problems.append(f"ar: config has {n_blocks} blocks, sidecar K = {k} (need K+1)")
    if len(ar_cfg.get("layer_types", [])) != n_blocks:
        problems.append(f"ar/config.json: {len(ar_cfg.get('layer_types', []))} layer_types for {n_blocks} blocks")
    trunc = dict(av_cfg, num_hidden_layers=n_blocks, layer_types=av_cfg.get("layer_types", [])[:n_blocks])
    if trunc != ar_cfg:
        diff = sorted(k2 for k2 in set(trunc) | set(ar_cfg) if trunc.get(k2) != ar_cfg.get(k2))
        problems.append(f"ar/config.json differs from the test config truncated to {n_blocks} blocks in: "
                        + ", ".join(diff))
    layers = set()
    try:
        for name, *_ in read_header(d / "ar" / "model.safetensors")[2]:
            m = re.match(r"model\.layers\.(\d+)\.", name)
            if m:
                layers.add(int(m.group(1)))
    except VerifyError:
        pass
    if layers and layers != set(range(n_blocks)):
        problems.append(f"ar/model.safetensors: blocks {sorted(layers)} != 0..{n_blocks - 1}")

    if problems:
        raise VerifyError("\n".join(problems))
    return {"ar_tensors": ar_tensors, "ar_bytes_hashed": ar_bytes, "av_tensors": av_tensors,
            "av_bytes_hashed": av_bytes, "n_blocks": n_blocks, "full": full}


# ------------------------------------------------------------------------------------------- stamp
def read_stamp(out):
    p = out / STAMP
    if not p.is_file():
        return None
    return dict(line.split("=", 1) for line in p.read_text().splitlines() if "=" in line)


def stamp_matches(out, inp):
    s = read_stamp(out)
    return s is not None and s.get("inputs_sha256") == inp.inputs_sha


def write_stamp(d, inp):
    lines = [f"inputs_sha256={inp.inputs_sha}", f"ar_manifest_sha256={inp.ar_manifest_sha}",
             f"test_manifest_sha256={inp.test_manifest_sha}", f"builder_version={BUILDER_VERSION}",
             f"test_model={inp.src}", f"verified_at={time.strftime('%Y-%m-%dT%H:%M:%S%z')}"]
    lines += [f"fixture.{k}={v}" for k, v in inp.fixture_sha.items()]
    lines += [f"file.{f}={fingerprint(d / f)}" for f in output_files()]
    (d / STAMP).write_text("\n".join(lines) + "\n")


def report(out, summary, elapsed, built):
    how = "built and verified" if built else ("verified (build skipped)" if not summary["full"]
                                               else "fully re-verified (build skipped)")
    hashed = summary["ar_bytes_hashed"] + summary["av_bytes_hashed"]
    log(f"{how} in {elapsed:.1f} s: AR {summary['ar_tensors']} tensors ({summary['n_blocks']} blocks + value head) "
        f"vs ar_MANIFEST; AV {summary['av_tensors']} tensors vs the test-model manifest; "
        f"{hashed:,} tensor bytes sha256-checked" + ("" if summary["full"] else " (headers only for the big files)"))
    for sub in ("av", "ar"):
        files = sorted(p for p in (out / sub).iterdir())
        desc = ", ".join(f"{p.name} ({p.stat().st_size:,}{', link' if p.stat().st_nlink > 1 else ''})"
                         for p in files)
        log(f"  {out / sub}: {desc}")


# -------------------------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cache = Path(os.environ.get("NLA_CACHE") or Path.home() / ".cache" / "nla")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("NLA_DEMO_DIR") or cache / "models" / "nla-demo"))
    ap.add_argument("--test-model", type=Path,
                    default=Path(os.environ.get("NLA_MODEL_DIR") or cache / "models" / "gemma-3-270m"))
    ap.add_argument("--fixtures", type=Path, default=Path(os.environ.get("NLA_DEMO_FIXTURES") or
                                                          REPO / "Tests/Fixtures/nla-demo"))
    ap.add_argument("--ar-manifest", type=Path, default=None,
                    help="default $NLA_DEMO_MANIFEST or <fixtures>/ar_MANIFEST.json")
    ap.add_argument("--test-manifest", type=Path, default=Path(os.environ.get("NLA_MANIFEST") or
                                                               REPO / "Tests/Fixtures/gemma-3-270m-MANIFEST.json"))
    ap.add_argument("--copy", action="store_true", help="copy the big checkpoint files instead of hard-linking")
    ap.add_argument("--full-verify", action="store_true", help="on a skipped build, re-hash every tensor too")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--verify-only", action="store_true", help="only verify the existing output")
    g.add_argument("--force", action="store_true", help="rebuild even if a verified output exists")
    args = ap.parse_args()
    if args.ar_manifest is None:
        env = os.environ.get("NLA_DEMO_MANIFEST")
        args.ar_manifest = Path(env) if env else args.fixtures / "ar_MANIFEST.json"
    t0 = time.time()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))

    inp = Inputs(args)
    out = args.out.expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = open(out.parent / f".{out.name}.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per output dir at a time
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed run (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)

    if args.verify_only or (not args.force and stamp_matches(out, inp)):
        if not out.is_dir():
            log(f"{out} does not exist")
            return 1
        stamp = read_stamp(out)
        cheap = stamp if (stamp and stamp.get("inputs_sha256") == inp.inputs_sha and not args.full_verify) else None
        try:
            summary = verify_pair(out, inp, full=cheap is None, stamp=cheap)
        except VerifyError as e:
            log(f"VERIFICATION FAILED for existing {out}:")
            for line in str(e).splitlines():
                print("  " + line, file=sys.stderr)
            if args.verify_only:
                return 1
            log("removing it and rebuilding")
            shutil.rmtree(out)
        else:
            report(out, summary, time.time() - t0, built=False)
            print(out)
            return 0

    for f in CHECKPOINT_FILES:
        if not (inp.src / f).is_file():
            log(f"test checkpoint file missing: {inp.src / f} (run scripts/make-test-model)")
            return 1
    log(f"building {out} from {inp.src} (AR manifest {args.ar_manifest}, sha256 {inp.ar_manifest_sha[:12]}…)")
    try:
        summary = build(out, inp, args.copy, t0)
    except VerifyError:
        log(f"no output left at {out}")
        return 1
    report(out, summary, time.time() - t0, built=True)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
