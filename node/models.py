"""Model registry: local model files, mesh-wide names and transfer by hash.

A model is identified by its content hash, the SHA-256 of its ``.net`` text
in UTF-8, so two nodes holding the same file agree on its identity without
talking. Three mechanisms build on that hash:

* Local storage (`ModelStore`): ``models/<hash>.net`` in the data directory,
  plus ``models/names.json`` mapping local names to hashes. A file is parsed
  by the neural engine before it is stored, so a node never advertises a
  model it cannot run.
* Names on the DAG (`NameRegistry`): a ``model.register`` vertex binds a name
  to a hash. Its only conflict key is ``name_conflict_key(name)``, so when two
  nodes register one name at once consensus accepts exactly one binding
  mesh-wide. A second provider of the same model does not register again; it
  only advertises.
* Providers in the DHT: a node that holds a model announces the discovery
  service ``provider_service(name, hash)``, whose DHT key
  ``provider_key(network, name, hash)`` also covers the network name. A lookup
  finds nodes that serve exactly that content under that name, and two
  networks never mix.

A node that lacks a model fetches it by hash over request/response
(`fetch_model`), in chunks of at most ``CHUNK_BYTES``, and checks the hash
before storing it.

Public API:
    content_hash(text: str) -> str
    provider_service(name: str, model_hash: str) -> str
    provider_key(network: str, name: str, model_hash: str) -> bytes
    name_conflict_key(name: str) -> bytes
    REGISTER_TYPE, FETCH_PROTOCOL, CHUNK_BYTES, MAX_MODEL_BYTES
    ModelInfo(name, model_hash, num_inputs, num_outputs, size)
    ModelStore(directory): add_text(name, text, bind=True) -> ModelInfo,
        add_file(path, name, bind=True) -> ModelInfo, bind(name, hash),
        unbind(name), has(hash), text(hash),
        network(hash), info(hash), resolve_local(name), list(),
        read_chunk(hash, offset, length) -> (bytes, total)
    registration_payload(info) / parse_registration(body) -> ModelInfo
    NameRegistry(): on_registration(vertex_id, info, status),
        resolve(name) -> str | None, pending(name) -> bool, names()
    await serve_chunk(store, request: dict) -> dict   (reqresp handler body)
    await fetch_model(reqresp, peer_id, model_hash, timeout) -> str
    ModelError(NodeError), ModelNotFound(ModelError)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from node import NodeError

REGISTER_TYPE: Final = "model.register"
FETCH_PROTOCOL: Final = "model-fetch"
# 256 KiB per reply keeps one response well under the request/response frame
# limit while a digits-sized network (about 60 KB) moves in one round trip.
CHUNK_BYTES: Final = 256 * 1024
# A FANN network of 16 MB of text has over a million connections; a peer
# that claims more is either broken or hostile.
MAX_MODEL_BYTES: Final = 16 * 1024 * 1024
MAX_NAME_LEN: Final = 128

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HASH_RE: Final = re.compile(r"^[0-9a-f]{64}$")
_NAME_KEY_TAG: Final = b"synaptic-mesh/model-name\x00"


class ModelError(NodeError):
    """A model file, name or transfer is invalid."""


class ModelNotFound(ModelError):
    """No model with this name or hash is stored here."""


def content_hash(text: str) -> str:
    """Return the content hash of a ``.net`` text: SHA-256 hex of its UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    """Return `name` if it is a valid model name, else raise `ModelError`."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ModelError(
            f"invalid model name {name!r}: use 1 to {MAX_NAME_LEN} letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def check_hash(model_hash: str) -> str:
    """Return `model_hash` if it is 64 lower-case hex digits."""
    if not isinstance(model_hash, str) or not _HASH_RE.match(model_hash):
        raise ModelError(f"invalid model hash {model_hash!r}: expected 64 hex digits")
    return model_hash


def provider_service(name: str, model_hash: str) -> str:
    """Return the discovery service name that providers of this model announce.

    ``p2p.discovery`` hashes it together with the network name into the DHT
    key (`provider_key`), so the key depends on network, name and hash.
    """
    return f"model:{name}:{model_hash}"


def provider_key(network: str, name: str, model_hash: str) -> bytes:
    """Return the DHT key under which providers of this model advertise."""
    from p2p.discovery import service_key

    return service_key(network, provider_service(name, model_hash))


def name_conflict_key(name: str) -> bytes:
    """Return the conflict key shared by every registration of `name`."""
    return hashlib.sha256(_NAME_KEY_TAG + name.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model as the registry describes it."""

    name: str
    model_hash: str
    num_inputs: int
    num_outputs: int
    size: int

    def to_json(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return asdict(self)


def registration_payload(info: ModelInfo) -> dict[str, Any]:
    """Return the payload of a ``model.register`` vertex for `info`."""
    return {
        "name": info.name,
        "model_hash": info.model_hash,
        "num_inputs": info.num_inputs,
        "num_outputs": info.num_outputs,
        "size": info.size,
    }


def parse_registration(body: Any) -> ModelInfo:
    """Check an untrusted ``model.register`` payload and return its `ModelInfo`."""
    if not isinstance(body, dict):
        raise ModelError("registration payload must be a map")
    numbers = {}
    for key in ("num_inputs", "num_outputs", "size"):
        value = body.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelError(f"registration field {key!r} must be an integer")
        if not 1 <= value <= MAX_MODEL_BYTES:
            raise ModelError(f"registration field {key}={value} is out of range")
        numbers[key] = value
    return ModelInfo(
        name=check_name(body.get("name")),
        model_hash=check_hash(body.get("model_hash")),
        **numbers,
    )


class ModelStore:
    """Model files of one node, stored by content hash.

    Methods may be called from worker threads (inference runs there), so the
    parsed-network cache and the name index sit behind one lock.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._index_path = self.directory / "names.json"
        self._lock = threading.Lock()
        self._networks: dict[str, Any] = {}
        self._infos: dict[str, ModelInfo] = {}
        self._names = self._read_index()

    def _read_index(self) -> dict[str, str]:
        try:
            names = json.loads(self._index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise ModelError(
                f"model index {self._index_path} is unreadable ({error}); "
                "delete it and add the models again"
            ) from None
        if not isinstance(names, dict):
            raise ModelError(f"model index {self._index_path} is not a JSON object")
        return {n: h for n, h in names.items() if self._path(h).is_file()}

    def _write_index(self) -> None:
        temporary = self._index_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._names, indent=1, sort_keys=True))
        os.replace(temporary, self._index_path)

    def _path(self, model_hash: str) -> Path:
        return self.directory / f"{model_hash}.net"

    def add_text(
        self, name: str, text: str, source: str = "<text>", *, bind: bool = True
    ) -> ModelInfo:
        """Parse `text` as a FANN network, store it and bind `name` to it.

        With ``bind=False`` only the file is stored; the caller binds the name
        with `bind` once the mesh has not rejected it.

        Raises:
            ModelError: the name is invalid, the text is too large, or the
                neural engine cannot parse it (the message names `source`).
        """
        import neural

        check_name(name)
        data = text.encode("utf-8")
        if len(data) > MAX_MODEL_BYTES:
            raise ModelError(
                f"model {source} has {len(data)} bytes, limit {MAX_MODEL_BYTES}"
            )
        try:
            network = neural.loads(text, source=source)
        except neural.NeuralError as error:
            raise ModelError(f"cannot load model {source}: {error}") from None
        model_hash = content_hash(text)
        path = self._path(model_hash)
        if not path.is_file():
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(data)
            os.replace(temporary, path)
        info = ModelInfo(
            name=name,
            model_hash=model_hash,
            num_inputs=int(network.num_inputs),
            num_outputs=int(network.num_outputs),
            size=len(data),
        )
        with self._lock:
            self._networks[model_hash] = network
            self._infos.setdefault(model_hash, info)
            if bind:
                self._names[name] = model_hash
                self._write_index()
        return info

    def bind(self, name: str, model_hash: str) -> None:
        """Bind local `name` to a stored model and save the name index."""
        check_name(name)
        if not self.has(model_hash):
            raise ModelNotFound(f"model {model_hash} is not stored here")
        with self._lock:
            if self._names.get(name) != model_hash:
                self._names[name] = model_hash
                self._write_index()

    def unbind(self, name: str) -> None:
        """Drop local `name`; the model file stays and can be bound again."""
        with self._lock:
            if self._names.pop(name, None) is not None:
                self._write_index()

    def add_file(self, path: Path, name: str, *, bind: bool = True) -> ModelInfo:
        """Store the ``.net`` file at `path` under `name` (see `add_text`)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ModelError(f"cannot read model file {path}: {error}") from None
        return self.add_text(name, text, source=str(path), bind=bind)

    def has(self, model_hash: str) -> bool:
        """Return whether the model with this hash is stored here."""
        return self._path(model_hash).is_file()

    def text(self, model_hash: str) -> str:
        """Return the ``.net`` text of a stored model."""
        try:
            return self._path(check_hash(model_hash)).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelNotFound(f"model {model_hash} is not stored here") from None

    def network(self, model_hash: str) -> Any:
        """Return the parsed `neural.Network` of a stored model (cached)."""
        with self._lock:
            network = self._networks.get(model_hash)
        if network is not None:
            return network
        import neural

        network = neural.loads(
            self.text(model_hash), source=str(self._path(model_hash))
        )
        with self._lock:
            self._networks[model_hash] = network
        return network

    def info(self, model_hash: str) -> ModelInfo:
        """Return the `ModelInfo` of a stored model, under its first local name."""
        with self._lock:
            known = self._infos.get(model_hash)
            names = sorted(n for n, h in self._names.items() if h == model_hash)
        if known is not None:
            return known
        network = self.network(model_hash)
        info = ModelInfo(
            name=names[0] if names else model_hash[:16],
            model_hash=model_hash,
            num_inputs=int(network.num_inputs),
            num_outputs=int(network.num_outputs),
            size=self._path(model_hash).stat().st_size,
        )
        with self._lock:
            self._infos[model_hash] = info
        return info

    def resolve_local(self, name: str) -> str | None:
        """Return the hash bound to `name` on this node, if any."""
        with self._lock:
            return self._names.get(name)

    def list(self) -> list[ModelInfo]:
        """Return every named model stored here, sorted by name."""
        with self._lock:
            names = sorted(self._names.items())
        return [ModelInfo(**{**self.info(h).to_json(), "name": n}) for n, h in names]

    def read_chunk(
        self, model_hash: str, offset: int, length: int
    ) -> tuple[bytes, int]:
        """Return ``length`` bytes of a stored model from ``offset``, and its size."""
        path = self._path(check_hash(model_hash))
        try:
            with path.open("rb") as file:
                total = os.fstat(file.fileno()).st_size
                file.seek(offset)
                return file.read(length), total
        except FileNotFoundError:
            raise ModelNotFound(f"model {model_hash} is not stored here") from None


class NameRegistry:
    """Mesh-wide model names, from ``model.register`` vertices.

    Only accepted registrations bind a name. Because every registration of a
    name shares one conflict key, at most one of them is ever accepted.
    """

    def __init__(self) -> None:
        self._accepted: dict[str, ModelInfo] = {}
        self._pending: dict[bytes, ModelInfo] = {}

    def on_registration(self, vertex_id: bytes, info: ModelInfo, status: str) -> None:
        """Record a registration vertex that was admitted, accepted or rejected."""
        if status == "admitted":
            if info.name not in self._accepted and len(self._pending) < 10_000:
                self._pending[vertex_id] = info
            return
        self._pending.pop(vertex_id, None)
        if status == "accepted":
            self._accepted.setdefault(info.name, info)

    def resolve(self, name: str) -> ModelInfo | None:
        """Return the accepted registration of `name`, or None."""
        return self._accepted.get(name)

    def pending(self, name: str) -> bool:
        """Return whether a registration of `name` awaits its decision."""
        return any(info.name == name for info in self._pending.values())

    def names(self) -> dict[str, ModelInfo]:
        """Return every accepted name with its registration."""
        return dict(self._accepted)


async def serve_chunk(store: ModelStore, request: Any) -> dict[str, Any]:
    """Serve one ``model-fetch`` request with a chunk of a stored model.

    The request is ``{"hash": str, "offset": int}``; the reply is
    ``{"data": bytes, "total": int}`` or ``{"error": str}``.
    """
    if not isinstance(request, dict):
        return {"error": "request must be a map"}
    offset = request.get("offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        return {"error": f"invalid offset {offset!r}"}
    try:
        data, total = store.read_chunk(
            check_hash(request.get("hash")), offset, CHUNK_BYTES
        )
    except ModelError as error:
        return {"error": str(error)}
    return {"data": data, "total": total}


async def fetch_model(
    reqresp: Any, peer_id: str, model_hash: str, timeout: float
) -> str:
    """Fetch the ``.net`` text of `model_hash` from `peer_id` and check its hash.

    Raises:
        ModelError: the peer has no such model, sent too much, or sent text
            whose hash differs.
        p2p.P2PError: the request failed or timed out.
    """
    check_hash(model_hash)
    parts: list[bytes] = []
    received = 0
    total = None
    while total is None or received < total:
        reply = await reqresp.request(
            peer_id, FETCH_PROTOCOL, {"hash": model_hash, "offset": received}, timeout
        )
        if not isinstance(reply, dict) or "error" in reply:
            error = reply.get("error") if isinstance(reply, dict) else reply
            raise ModelError(f"peer {peer_id} cannot send model {model_hash}: {error}")
        data, size = reply.get("data"), reply.get("total")
        if (
            not isinstance(data, bytes)
            or isinstance(size, bool)
            or not isinstance(size, int)
        ):
            raise ModelError(f"peer {peer_id} sent a malformed model chunk")
        if not 0 < size <= MAX_MODEL_BYTES or (total is not None and size != total):
            raise ModelError(f"peer {peer_id} sent model size {size}")
        if not data or received + len(data) > size:
            raise ModelError(f"peer {peer_id} sent a chunk outside the model size")
        total = size
        parts.append(data)
        received += len(data)
    blob = b"".join(parts)
    if hashlib.sha256(blob).hexdigest() != model_hash:
        raise ModelError(
            f"peer {peer_id} sent model data that does not match {model_hash}"
        )
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelError(f"model {model_hash} from {peer_id} is not UTF-8") from None
