"""The store's objects in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO...), via boto3.

Key "a/b" is the object PREFIX/a/b. Endpoint, region and credentials come the standard AWS
way (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/...).

- put: one PutObject, or a multipart upload above `multipart_threshold` (aborted if the
  put fails). `exclusive` is If-None-Match: * (on CompleteMultipartUpload for multipart).
  Transient errors (5xx, throttling, dropped connections) are retried with exponential
  backoff and jitter by botocore's "standard" retry mode.
- lock: lease objects under PREFIX/.locks/NAME/. An exclusive holder creates `x` with
  If-None-Match: *, then waits until no live shared lease is left; a shared holder writes
  its own `s-TOKEN`, then backs off (deletes it and waits) while a live `x` exists. Each
  side writes before it looks, so with the strong read-after-write consistency S3 offers
  at least one of two racing holders sees the other. A lease lives the `lease_ttl` of its
  writer (kept in its name, or its metadata for `x`) after its last write by the server's clock (LastModified against the Date of the answer,
  so host clocks do not matter); a thread renews held leases every third of that, with
  If-Match on the lease's ETag, and a renewal that finds the lease replaced or gone marks
  the lock lost (`held()` is False), so its holder stops before it commits anything.
  An expired exclusive lease is taken over with If-Match (one taker wins); expired shared
  leases are deleted by a waiting exclusive taker.
- cleanup_incomplete: aborts multipart uploads under the prefix and removes temporary
  objects (PREFIX/.tmp/) and expired leases, older than `max_age` by the server's clock.

The server must honour conditional writes (If-None-Match: * and If-Match on PutObject):
AWS S3 and MinIO document them, SeaweedFS 4.48 (the tests' server) honours them. A server
that ignored them would make exclusive writes and leases silently unsafe, so the first
lock or exclusive put checks once, and refuses the store by name if If-None-Match is
ignored.
"""
from __future__ import annotations

import email.utils
import json
import logging
import os
import secrets
import socket
import threading
import time
from datetime import datetime
from typing import Any, Iterator

from .backend import Backend, Lock, check_key
from .errors import AlreadyExists, InvalidName, LockTimeout, NotFound, StoreError

log = logging.getLogger(__name__)

MiB = 1 << 20
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
               "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed", "Forbidden"}
_GONE = {"NoSuchKey", "404", "NotFound"}
_TTL_META = "lease-ttl-ms"
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


class S3Error(StoreError):
    """The object store answered with an error, or could not be reached (one line)."""


def _client(workers: int):
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError
    except ImportError:
        raise StoreError("s3:// stores need boto3: pip install 'jupyter-ckpt[s3]'") from None
    path_style = bool(os.environ.get("AWS_ENDPOINT_URL") or
                      os.environ.get("AWS_ENDPOINT_URL_S3"))
    try:
        session = boto3.session.Session()
        # A busy server answers "InternalError, please try again" now and then: retried
        # with exponential backoff (botocore's standard mode) for up to about a minute.
        config = Config(retries={"mode": "standard", "max_attempts": 10},
                        connect_timeout=5, read_timeout=60,
                        max_pool_connections=max(10, 4 * workers),
                        s3={"addressing_style": "path" if path_style else "auto"},
                        region_name=session.region_name or "us-east-1")
        return session.client("s3", config=config)
    except (BotoCoreError, ValueError) as err:  # unknown profile, malformed endpoint URL
        raise S3Error(f"S3 client configuration: {err}") from None


def _server_now(resp: dict[str, Any]) -> float:
    """The server's clock, from the Date header of one of its answers."""
    date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if date:
        return email.utils.parsedate_to_datetime(date).timestamp()
    return time.time()


class _Lease(Lock):
    """A held lease object, renewed by a thread until released."""

    def __init__(self, backend: "S3Backend", key: str, body: bytes, etag: str):
        self._backend = backend
        self.key = key
        self._body = body
        self._etag = etag
        self._sent = time.monotonic()  # when the last successful write was sent
        self._lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                        name=f"ckpt-lease-{key.rsplit('/', 2)[-2]}")
        self._thread.start()

    def held(self) -> bool:
        """Still ours: renewed recently enough, and the lease object in the bucket is the
        one we wrote last (another host may have removed it, judging it expired)."""
        if self._lost or time.monotonic() - self._sent >= 0.8 * self._backend.lease_ttl:
            return False
        head = self._backend._head(self.key)
        if head is None or head["ETag"] != self._etag:
            self._lost = True
        return not self._lost

    def _renew_loop(self) -> None:
        while not self._stop.wait(self._backend.lease_ttl / 3):
            sent = time.monotonic()
            try:
                self._etag = self._backend._put_lease(self.key, self._body, if_match=self._etag)
                self._sent = sent
            except AlreadyExists:  # If-Match failed: replaced or removed by another taker
                log.error("store lease %s was taken over or removed: lock lost", self.key)
                self._lost = True
                return
            except StoreError as err:  # retried already; try again at the next period
                log.warning("store lease %s not renewed: %s", self.key, err)

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        if self.held():  # a lease lost may be someone else's by now: leave it
            try:
                self._backend._delete_raw(self.key)
            except StoreError as err:
                log.warning("store lease %s not removed (it expires): %s", self.key, err)


class S3Backend(Backend):
    """Objects in s3://BUCKET/PREFIX. See the module docstring."""

    def __init__(self, bucket: str, prefix: str = "", *, lease_ttl: float = 30.0,
                 multipart_threshold: int = 64 * MiB, part_size: int = 16 * MiB,
                 workers: int = 8, client: Any = None):
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        if not bucket:
            raise InvalidName("s3:// store URL names no bucket")
        self.bucket = bucket
        self.prefix = prefix + "/" if prefix else ""
        self.lease_ttl = lease_ttl
        self.multipart_threshold = max(multipart_threshold, 5 * MiB)
        self.part_size = max(part_size, 5 * MiB)  # S3's smallest part but the last
        self.client = client or _client(workers)
        self._conditional_checked = False
        self._check_lock = threading.Lock()

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    # --- errors ----------------------------------------------------------------------

    def _fail(self, err: Exception, what: str) -> StoreError:
        """One line for an exception of boto3/botocore."""
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        url = self.describe()
        if isinstance(err, ClientError):
            e = err.response.get("Error", {})
            code = str(e.get("Code", ""))
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket" or (what == "head bucket" and status == 404):
                return S3Error(f"{url}: no such bucket {self.bucket!r}")
            if code in _AUTH_CODES or status == 403:
                return S3Error(f"{url}: access denied ({code or status}): check "
                               "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
            return S3Error(f"{url}: {what}: {code or status} {e.get('Message', '')}".rstrip())
        if isinstance(err, NoCredentialsError):
            return S3Error(f"{url}: no AWS credentials (set AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)")
        if isinstance(err, EndpointConnectionError):
            return S3Error(f"{url}: cannot reach the endpoint {err.kwargs.get('endpoint_url')}")
        return S3Error(f"{url}: {what}: {err}")

    @staticmethod
    def _code(err: Exception) -> str:
        resp = getattr(err, "response", None) or {}
        code = str(resp.get("Error", {}).get("Code", ""))
        return code or str(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))

    def _call(self, what: str, fn, **kw) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kw)
        except (ClientError, BotoCoreError) as err:
            raise self._fail(err, what) from None

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    # --- objects ---------------------------------------------------------------------

    def put(self, key: str, data: bytes | bytearray | memoryview, *,
            exclusive: bool = False) -> None:
        full = self._key(key)
        if exclusive:
            self._check_conditional()
        self._put_raw(full, data, exclusive=exclusive)

    def _put_raw(self, full: str, data, *, exclusive: bool = False,
                 if_match: str | None = None, metadata: dict[str, str] | None = None) -> str:
        """Write an object; its ETag. AlreadyExists when a condition does not hold."""
        from botocore.exceptions import BotoCoreError, ClientError

        cond: dict[str, str] = {}
        if exclusive:
            cond["IfNoneMatch"] = "*"
        if if_match is not None:
            cond["IfMatch"] = if_match
        extra = {"Metadata": metadata} if metadata else {}
        view = memoryview(data).cast("B")
        try:
            if len(view) > self.multipart_threshold:
                return self._put_multipart(full, view, cond, extra)
            return self.client.put_object(Bucket=self.bucket, Key=full, Body=view.tobytes()
                                          if not isinstance(data, bytes) else data,
                                          **cond, **extra)["ETag"]
        except ClientError as err:
            if cond and self._code(err) in _PRECONDITION | _GONE:
                key = full[len(self.prefix):]
                raise AlreadyExists(f"object {key} already exists" if exclusive else
                                    f"object {key} was replaced or removed") from None
            raise self._fail(err, f"put {full}") from None
        except BotoCoreError as err:
            raise self._fail(err, f"put {full}") from None

    def _put_multipart(self, full: str, view: memoryview, cond: dict[str, str],
                       extra: dict[str, Any]) -> str:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=full,
                                                     **extra)["UploadId"]
        try:
            parts = []
            for n, off in enumerate(range(0, len(view), self.part_size), 1):
                body = view[off:off + self.part_size].tobytes()
                etag = self.client.upload_part(Bucket=self.bucket, Key=full, UploadId=upload,
                                               PartNumber=n, Body=body)["ETag"]
                parts.append({"PartNumber": n, "ETag": etag})
            return self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload,
                MultipartUpload={"Parts": parts}, **cond)["ETag"]
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full,
                                                   UploadId=upload)
            except Exception as err:  # cleanup_incomplete gets it later
                log.warning("multipart upload of %s not aborted: %s", full, err)
            raise

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(key)
        try:
            data = self.client.get_object(Bucket=self.bucket, Key=full)["Body"].read()
        except ClientError as err:
            if self._code(err) in _GONE:
                raise NotFound(f"object {key} not found") from None
            raise self._fail(err, f"get {key}") from None
        except BotoCoreError as err:
            raise self._fail(err, f"get {key}") from None
        if not data:  # as the local backend: an empty object is no object
            raise NotFound(f"object {key} not found")
        return data

    def _head(self, full: str) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as err:
            if self._code(err) in _GONE:
                return None
            raise self._fail(err, f"head {full}") from None
        except BotoCoreError as err:
            raise self._fail(err, f"head {full}") from None

    def size(self, key: str) -> int | None:
        head = self._head(self._key(key))
        return (head["ContentLength"] or None) if head else None

    def delete(self, key: str) -> bool:
        full = self._key(key)
        if self._head(full) is None:  # S3's DeleteObject does not say whether it was there
            return False
        self._delete_raw(full)
        return True

    def _delete_raw(self, full: str) -> None:
        self._call(f"delete {full}", self.client.delete_object, Key=full)

    def _list_raw(self, full_prefix: str) -> Iterator[tuple[dict[str, Any], float]]:
        """(object, server time of the page that listed it) for every key under a prefix."""
        token = None
        while True:
            kw = {"Prefix": full_prefix}
            if token:
                kw["ContinuationToken"] = token
            page = self._call(f"list {full_prefix}", self.client.list_objects_v2, **kw)
            now = _server_now(page)
            for obj in page.get("Contents", []):
                yield obj, now
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        if prefix:
            head = prefix.rsplit("/", 1)[0] if "/" in prefix else prefix
            check_key(head)
        for obj, _ in self._list_raw(self.prefix + prefix):
            key = obj["Key"][len(self.prefix):]
            if key.startswith(".") or "/." in key:  # leases and temporary objects
                continue
            yield key, obj["Size"]

    def flush(self) -> None:
        """Nothing to do: S3 answers a PUT once the object is durable."""

    # --- conditional writes ----------------------------------------------------------

    def _check_conditional(self) -> None:
        """Refuse a missing bucket, and a server that ignores If-None-Match (it would break
        exclusivity). Once per backend object, before its first lock or exclusive put."""
        with self._check_lock:
            if self._conditional_checked:
                return
            # first, that the bucket exists: some servers create one on a first upload
            self._call("head bucket", self.client.head_bucket)
            probe = f"{self.prefix}.tmp/probe-{secrets.token_hex(8)}"
            self._put_raw(probe, b"1", exclusive=True)
            try:
                self._put_raw(probe, b"2", exclusive=True)
                ignored = True
            except AlreadyExists:
                ignored = False
            finally:
                self._delete_raw(probe)
            if ignored:
                raise S3Error(f"{self.describe()}: the server ignores conditional writes "
                              "(If-None-Match), which the store's locks need")
            self._conditional_checked = True

    # --- locks -----------------------------------------------------------------------

    def _put_lease(self, full: str, body: bytes, *, exclusive: bool = False,
                   if_match: str | None = None) -> str:
        return self._put_raw(full, body, exclusive=exclusive, if_match=if_match,
                             metadata={_TTL_META: str(int(self.lease_ttl * 1000))})

    def _expired(self, full: str, last_modified: datetime, now: float,
                 head: dict[str, Any] | None = None) -> bool:
        """Whether a lease is past the lifetime its writer gave it (hosts may differ)."""
        ttl_ms = None
        if head is not None:
            ttl_ms = head.get("Metadata", {}).get(_TTL_META)
        elif full.rsplit("/", 1)[-1].startswith("s-"):
            ttl_ms = full.rsplit("/", 1)[-1].split("-")[1]
        try:
            ttl = int(ttl_ms) / 1000
        except (TypeError, ValueError):
            ttl = self.lease_ttl
        return now - last_modified.timestamp() >= ttl

    def _head_expired(self, full: str, head: dict[str, Any]) -> bool:
        return self._expired(full, head["LastModified"], _server_now(head), head)

    def lock(self, name: str, *, shared: bool = False, timeout: float | None = None) -> Lock:
        if "/" in name:
            raise InvalidName(f"invalid lock name {name!r}")
        check_key(name)
        self._check_conditional()
        base = f"{self.prefix}.locks/{name}/"
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "shared": shared, "token": secrets.token_hex(8)}).encode()
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.02

        def wait(holder: str) -> None:
            nonlocal delay
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeout(f"store lock {name!r} of {self.describe()} is busy "
                                  f"({holder}; waited {timeout:g} s)")
            time.sleep(delay if deadline is None else
                       max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)

        if shared:
            mine = f"{base}s-{int(self.lease_ttl * 1000)}-{secrets.token_hex(8)}"
            while True:
                etag = self._put_lease(mine, body)
                head = self._head(base + "x")
                if head is None or self._head_expired(base + "x", head):
                    return _Lease(self, mine, body, etag)
                self._delete_raw(mine)  # an exclusive holder is there or coming: let it go
                wait("held exclusively")

        xkey = base + "x"
        while True:  # phase 1: own the exclusive lease
            try:
                etag = self._put_lease(xkey, body, exclusive=True)
                break
            except AlreadyExists:
                pass
            head = self._head(xkey)
            if head is not None and self._head_expired(xkey, head):
                try:  # its holder is gone: take it over (If-Match: one taker wins)
                    etag = self._put_lease(xkey, body, if_match=head["ETag"])
                    log.warning("took over the expired store lease %s", xkey)
                    break
                except AlreadyExists:
                    continue
            if head is not None:
                wait("held exclusively")
        lease = _Lease(self, xkey, body, etag)
        try:  # phase 2: shared holders finish (new ones back off while x exists)
            while True:
                live = 0
                for obj, now in self._list_raw(base + "s-"):
                    if self._expired(obj["Key"], obj["LastModified"], now):
                        self._delete_raw(obj["Key"])  # a holder that died
                    else:
                        live += 1
                if not live:
                    return lease
                wait(f"{live} shared holder(s)")
        except BaseException:
            lease.release()
            raise

    # --- cleanup ---------------------------------------------------------------------

    def cleanup_incomplete(self, max_age: float = 3600.0) -> None:
        """Abort multipart uploads and remove temporary objects older than `max_age`
        seconds (by the server's clock), and remove expired leases. A store's own puts hold
        the shared lock; gc, which calls this, holds it exclusively: uploads it finds are
        of writers that died or of puts outside the store's locking."""
        key_marker = upload_marker = None
        while True:
            kw: dict[str, Any] = {"Prefix": self.prefix}
            if key_marker:
                kw.update(KeyMarker=key_marker, UploadIdMarker=upload_marker)
            page = self._call("list multipart uploads", self.client.list_multipart_uploads,
                              **kw)
            now = _server_now(page)
            for up in page.get("Uploads") or []:
                if now - up["Initiated"].timestamp() >= max_age:
                    log.info("aborting abandoned multipart upload of %s", up["Key"])
                    self._call(f"abort upload of {up['Key']}",
                               self.client.abort_multipart_upload, Key=up["Key"],
                               UploadId=up["UploadId"])
            if not page.get("IsTruncated"):
                break
            key_marker = page.get("NextKeyMarker")
            upload_marker = page.get("NextUploadIdMarker")
        for obj, now in self._list_raw(self.prefix + ".tmp/"):
            if now - obj["LastModified"].timestamp() >= max_age:
                self._delete_raw(obj["Key"])
        for obj, now in self._list_raw(self.prefix + ".locks/"):
            head = None
            if obj["Key"].endswith("/x"):
                head = self._head(obj["Key"])
                if head is None:
                    continue
            if self._expired(obj["Key"], obj["LastModified"], now, head):
                self._delete_raw(obj["Key"])


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of s3://BUCKET[/PREFIX]."""
    if not url.startswith("s3://"):
        raise InvalidName(f"not an s3:// URL: {url!r}")
    rest = url[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise InvalidName(f"store URL {url!r} names no bucket (s3://BUCKET/PREFIX)")
    return bucket, prefix.strip("/")
