"""Drives ``worker.py`` in the reference SDK's virtualenv: one subprocess, one line per call."""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

WORKER = Path(__file__).with_name("worker.py")


class AntomSdkError(Exception):
    """The SDK (or the worker) refused a call; ``error_type`` is the SDK's exception class name."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error_type, _, self.detail = error.partition(": ")


class AntomSdkWorkerDied(RuntimeError):
    """The worker process ended or answered something that is not a protocol line."""


@dataclass(frozen=True)
class SdkRequest:
    """What ``DefaultAlipayClient.execute`` would have put on the wire."""

    url: str
    path: str
    headers: dict[str, str]
    body: str
    request_time: str
    signature: str

    @property
    def body_bytes(self) -> bytes:
        return self.body.encode("utf-8")


def _text(body: str | bytes) -> str:
    """The SDK takes bodies as ``str`` and encodes them UTF-8 itself; ours are bytes."""
    return body.decode("utf-8") if isinstance(body, bytes) else body


class AntomSdk:
    """Synchronous handle on one worker process; every method is one SDK call."""

    def __init__(self, process: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
        self._process = process
        self._stderr = stderr
        self._next_id = 0
        self.versions: dict[str, str] = self.call("versions")

    @classmethod
    def start(cls, python: Path) -> AntomSdk:
        """Start the worker under ``python`` (isolated mode: no PYTHON* variables, no user site)."""
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker
        process = subprocess.Popen(
            [str(python), "-I", str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            return cls(process, stderr)
        except BaseException:
            cls._stop(process, stderr)
            raise

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    # -- protocol ----------------------------------------------------------------------------

    def raw(self, line: str) -> dict[str, Any]:
        """Send one line verbatim and return the decoded answer line (protocol tests)."""
        stdin, stdout = self._process.stdin, self._process.stdout
        if stdin is None or stdout is None or stdin.closed:
            raise AntomSdkWorkerDied("the worker is closed")
        try:
            stdin.write(line.encode("utf-8") + b"\n")
            stdin.flush()
        except BrokenPipeError:
            raise AntomSdkWorkerDied(self._death_note()) from None
        answer = stdout.readline()
        if not answer:
            raise AntomSdkWorkerDied(self._death_note())
        try:
            decoded = json.loads(answer)
        except ValueError:
            raise AntomSdkWorkerDied(f"not a protocol line: {answer!r}") from None
        if not isinstance(decoded, dict):
            raise AntomSdkWorkerDied(f"not a protocol line: {answer!r}")
        return decoded

    def call(self, op: str, **arguments: Any) -> Any:
        """Run ``op`` in the worker; its result, or :class:`AntomSdkError` with the SDK's error."""
        self._next_id += 1
        answer = self.raw(json.dumps({"id": self._next_id, "op": op, **arguments}))
        if answer.get("id") != self._next_id:
            raise AntomSdkWorkerDied(f"answer out of order: {answer!r}")
        if "error" in answer:
            raise AntomSdkError(answer["error"])
        return answer["result"]

    def close(self, timeout: float = 10.0) -> int:
        """End the worker (end of input, then kill after ``timeout``); return its exit status."""
        return self._stop(self._process, self._stderr, timeout)

    @staticmethod
    def _stop(process: subprocess.Popen[bytes], stderr: IO[bytes], timeout: float = 10.0) -> int:
        if process.stdin is not None and not process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        stderr.close()
        return process.returncode

    def _death_note(self) -> str:
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            return "the worker stopped answering"
        self._stderr.seek(0)
        tail = self._stderr.read()[-4000:].decode("utf-8", "replace")
        return f"the worker exited with status {self._process.returncode}:\n{tail}"

    # -- the SDK's functions -----------------------------------------------------------------

    def sign(
        self, method: str, path: str, client_id: str, time: str, body: str | bytes, private_key: str
    ) -> str:
        """``signature_tool.sign``: the URL-encoded base64 value that follows ``signature=``."""
        result: str = self.call(
            "sign",
            method=method,
            path=path,
            client_id=client_id,
            time=time,
            body=_text(body),
            private_key=private_key,
        )
        return result

    def verify(
        self,
        method: str,
        path: str,
        client_id: str,
        time: str,
        body: str | bytes,
        signature: str,
        public_key: str,
    ) -> bool:
        """``signature_tool.verify`` (``signature`` = the text after ``signature=``)."""
        result: bool = self.call(
            "verify",
            method=method,
            path=path,
            client_id=client_id,
            time=time,
            body=_text(body),
            signature=signature,
            public_key=public_key,
        )
        return result

    def check_signature(
        self,
        method: str,
        path: str,
        client_id: str,
        time: str,
        body: str | bytes,
        header: str,
        public_key: str,
    ) -> bool:
        """``webhook_tool.check_signature`` with the whole ``Signature`` header value."""
        result: bool = self.call(
            "check_signature",
            method=method,
            path=path,
            client_id=client_id,
            time=time,
            body=_text(body),
            header=header,
            public_key=public_key,
        )
        return result

    def verify_response(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: str | bytes,
        public_key: str,
    ) -> None:
        """``DefaultAlipayClient.execute``'s response checks; raises if the SDK would refuse."""
        self.call(
            "verify_response",
            method=method,
            path=path,
            headers=[list(pair) for pair in headers],
            body=_text(body),
            public_key=public_key,
        )

    def build_request(
        self,
        operation: str,
        fields: Mapping[str, Any],
        *,
        client_id: str,
        private_key: str,
        now: float | None = None,
        key_version: str | None = None,
        gateway_url: str = "https://open-sea-global.alipay.com",
    ) -> SdkRequest:
        """What ``DefaultAlipayClient.execute`` sends for ``operation`` (camelCase fields)."""
        result = self.call(
            "build_request",
            operation=operation,
            fields=dict(fields),
            client_id=client_id,
            private_key=private_key,
            now=now,
            key_version=key_version,
            gateway_url=gateway_url,
        )
        return SdkRequest(**result)
