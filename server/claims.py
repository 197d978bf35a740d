"""Event-id claims between serving workers and their coordinator (see
:meth:`server.engine.Engine.claim`), batched: the claims of Decides running at
once in a worker go in one call, since a call costs far more CPU than the
claims it carries (a few dict operations at the coordinator).

Wire format (not part of the public API), bytes both ways. Request: per
claim, a 4-byte big-endian length and the event id, the same and the decision
line. Answer: per claim in order, one kind byte and a 4-byte length and the
payload: ``N`` the id is the worker's (empty), ``L``/``C`` the id's decision
line, logged or only claimed, ``E`` a refusal (one byte of status code, the
message)."""

from __future__ import annotations

import struct
import threading
from concurrent.futures import Future
from typing import Callable, Iterator

import grpc

from server.engine import Engine
from server.service import failure

CLAIM = "/placement.internal.Coordination/Claim"
MAX_BATCH = 256  # claims per call

Verdict = tuple[str, bool] | None  # the id's (line, logged), or None: the claimer's


def _frames(data: bytes) -> Iterator[bytes]:
    at = 0
    while at < len(data):
        (size,) = struct.unpack_from(">I", data, at)
        yield data[at + 4:at + 4 + size]
        at += 4 + size


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


class Relayed(grpc.RpcError):
    """A status a worker answers for its coordinator: a claim's refusal
    (ALREADY_EXISTS, RESOURCE_EXHAUSTED) as it gave it, or what a worker says
    when its coordinator did not answer. Not counted by the worker as a bad
    request (see service.failure): the coordinator counts what it refuses."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(code, message)
        self._code, self.message = code, message

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self.message


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def answer_claims(engine: Engine, request: bytes) -> bytes:
    """The coordinator's side: every claim of a batch, in order."""
    frames = list(_frames(request))
    out = []
    for key, line in zip(frames[::2], frames[1::2]):
        try:
            known = engine.claim(key.decode(), line.decode())
        except Exception as exc:  # noqa: BLE001 -- per claim; failure() logs the unexpected
            code, message = failure(exc, engine.counts, "claim")
            out.append(b"E" + _frame(bytes([code.value[0]]) + message.encode()))
            continue
        if known is None:
            out.append(b"N" + _frame(b""))
        else:
            out.append((b"L" if known[1] else b"C") + _frame(known[0].encode()))
    return b"".join(out)


def _verdicts(answer: bytes) -> Iterator[Verdict | Relayed]:
    at = 0
    while at < len(answer):
        kind = answer[at:at + 1]
        (size,) = struct.unpack_from(">I", answer, at + 1)
        payload = answer[at + 5:at + 5 + size]
        at += 5 + size
        if kind == b"N":
            yield None
        elif kind == b"E":
            yield Relayed(_CODES[payload[0]], payload[1:].decode())
        else:
            yield payload.decode(), kind == b"L"


class ClaimBatcher:
    """A worker's side: :meth:`claim` blocks until its batch is answered; one
    sender thread sends whatever claims queued while the last call was out."""

    def __init__(self, call: Callable[..., bytes], timeout: float, metadata: tuple[tuple[str, str], ...] = ()):
        self._call, self._timeout, self._metadata = call, timeout, metadata
        self._queue: list[tuple[bytes, Future]] = []
        self._ready = threading.Condition()
        threading.Thread(target=self._send_loop, name="claims", daemon=True).start()

    def claim(self, event_id: str, line: str) -> Verdict:
        """None when the id is this caller's; else its (line, logged). Raises
        Relayed, or the call's grpc.RpcError when the coordinator did not answer."""
        future: Future = Future()
        with self._ready:
            self._queue.append((_frame(event_id.encode()) + _frame(line.encode()), future))
            self._ready.notify()
        return future.result()

    def _send_loop(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                batch, self._queue[:MAX_BATCH] = self._queue[:MAX_BATCH], []
            try:
                answer = self._call(b"".join(claim for claim, _ in batch), timeout=self._timeout,
                                    metadata=self._metadata)
                verdicts = list(_verdicts(answer))
                if len(verdicts) != len(batch):
                    raise ValueError(f"{len(verdicts)} verdicts for {len(batch)} claims")
            except Exception as err:  # noqa: BLE001 -- every waiting Decide hears of it
                for _, future in batch:
                    future.set_exception(err)
                continue
            for (_, future), verdict in zip(batch, verdicts):
                if isinstance(verdict, Relayed):
                    future.set_exception(verdict)
                else:
                    future.set_result(verdict)
