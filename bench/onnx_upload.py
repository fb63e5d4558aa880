"""Benchmark: a ~1 GiB ONNX model archive through the multipart flow of the embedded server.

Builds a real model (ir_version 10, a chain of MatMul + Add layers whose float32
initializers total the requested size; the protobuf is written piece by piece, so the
weights are never held in memory) packed as `model.tar.gz`, starts `manage.py serve` on a
free loopback port with a throwaway BLOBHUB_DATA_DIR, then in the same run measures:

- the baseline: `cp` of the archive (before and after the flow; their mean is the baseline);
- the flow: `initiate_upload` → a PUT of each part to its signed URL (streamed from the
  file, `--parallel` at a time) → `complete_upload` → the processing operation completes;
  its throughput against the baseline's (target: at least 0.4);
- the peak RSS (VmHWM) of the serve process, which holds both the server and the worker,
  reset between phases (startup, parts, processing, download); target: under 256 MiB;
- `describe` against the model that was built, and `initiate_download` of `model.onnx`,
  read part by part and checked by SHA-256 against the built model.

It also prints the server's CPU seconds per phase (load-independent, unlike the wall times
on a shared machine) and the processing's own timing of its phases (from its log line).
The archive is gzip level 1 (ISA-L when installed: zlib's level 1 takes minutes for 1 GiB);
`--gzip-level 0` writes stored blocks, which inflate far faster than real archives do.
Not a pass/fail test: it prints figures, and exits non-zero only when something breaks.

    .venv/bin/python bench/onnx_upload.py                  # 1 GiB
    .venv/bin/python bench/onnx_upload.py --size-mib 128 --parallel 1
"""

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from _services import ServeProcess
from onnx import TensorProto, helper

MIB = 1024 * 1024
CHUNK = MIB
KEY_PATTERN = re.compile(r"bh_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
ORG_PATTERN = re.compile(r"organization:\s+(\S+)")
PHASES_PATTERN = re.compile(r"upload \S+ processed \([^)]*\): (.*)$", re.MULTILINE)
STARTUP_SECONDS = 120
RATIO_TARGET, RSS_TARGET_MIB = 0.4, 256


# --- The model, written as protobuf pieces -------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


@dataclass
class ModelPlan:
    """A chain of `layers` × (MatMul by a [width, width] weight, Add a [width] bias)."""

    width: int
    layers: int
    seed: int = 7
    pieces: list = field(default_factory=list)  # bytes, or ("weights", count) for random floats
    size: int = 0

    @property
    def parameters(self) -> int:
        return self.layers * (self.width * self.width + self.width)

    @property
    def initializer_bytes(self) -> int:
        return self.parameters * 4

    def build(self) -> "ModelPlan":
        nodes, initializers = [], []
        previous = "x"
        for index in range(self.layers):
            nodes.append(helper.make_node("MatMul", [previous, f"W{index}"], [f"h{index}"], name=f"matmul{index}"))
            out = "y" if index == self.layers - 1 else f"a{index}"
            nodes.append(helper.make_node("Add", [f"h{index}", f"b{index}"], [out], name=f"add{index}"))
            previous = out
            initializers += [(f"W{index}", [self.width, self.width]), (f"b{index}", [self.width])]
        graph = helper.make_graph(
            nodes,
            "bench-chain",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", self.width])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", self.width])],
        )
        model = helper.make_model(graph, producer_name="blobhub-bench", opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 10
        helper.set_model_props(model, {"purpose": "benchmark"})
        graph_head = model.graph.SerializeToString()
        model.ClearField("graph")
        model_head = model.SerializeToString()

        # Each initializer: its name, dims and type, then raw_data (field 9) streamed after.
        tensor_pieces, graph_size = [], len(graph_head)
        for name, dims in initializers:
            head = TensorProto(name=name, dims=dims, data_type=TensorProto.FLOAT).SerializeToString()
            count = int(np.prod(dims))
            raw = count * 4
            head += field_key(9, 2) + varint(raw)
            tensor_size = len(head) + raw
            prefix = field_key(5, 2) + varint(tensor_size)
            tensor_pieces += [prefix + head, ("weights", count)]
            graph_size += len(prefix) + tensor_size
        self.pieces = [model_head, field_key(7, 2) + varint(graph_size), graph_head, *tensor_pieces]
        self.size = sum(len(p) if isinstance(p, bytes) else p[1] * 4 for p in self.pieces)
        return self

    def chunks(self):
        rng = np.random.default_rng(self.seed)
        for piece in self.pieces:
            if isinstance(piece, bytes):
                yield piece
                continue
            left = piece[1]
            while left:
                count = min(left, CHUNK // 4)
                weights = rng.random(count, dtype=np.float32)
                weights -= 0.5
                yield weights.tobytes()
                left -= count


def plan_for(size: int) -> ModelPlan:
    width = min(4096, int((size / 4) ** 0.5))
    return ModelPlan(width=width, layers=max(1, round(size / (width * width * 4)))).build()


def deflater(level: int):
    """ISA-L for levels 1 to 3 (it compresses 10 times as fast as zlib; the server inflates
    with it too when installed), else zlib (level 0 makes stored blocks: no compression)."""
    if 1 <= level <= 3:
        try:
            from isal import isal_zlib

            return isal_zlib
        except ImportError:
            pass
    return zlib


def write_archive(plan: ModelPlan, target: Path, level: int) -> str:
    """`model.tar.gz` holding the model as `model.onnx`; returns the model's SHA-256."""
    info = tarfile.TarInfo("model.onnx")
    info.size, info.mode, info.mtime = plan.size, 0o644, int(time.time())
    compressor = deflater(level).compressobj(level, zlib.DEFLATED, 31)  # 31: the gzip wrapper
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        out.write(compressor.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
        for chunk in plan.chunks():
            digest.update(chunk)
            out.write(compressor.compress(chunk))
        trailer = b"\0" * (-plan.size % 512) + b"\0" * 1024  # pad the member, then two zero blocks
        trailer += b"\0" * (-(512 + plan.size + len(trailer)) % tarfile.RECORDSIZE)
        out.write(compressor.compress(trailer))
        out.write(compressor.flush())
    return digest.hexdigest()


# --- The server ---------------------------------------------------------------------------------


class Server(ServeProcess):
    """`manage.py serve` (LOG_LEVEL INFO: for the processing's own timing of its phases), with
    the CPU time and the peak RSS, resettable, of its process."""

    def __init__(self, data_dir: Path):
        super().__init__(data_dir, log_level="INFO")

    def key_and_org(self) -> tuple[str, str]:
        """Wait for /healthz and the first-start API key and organization; return them."""
        key, org = self.wait_ready(STARTUP_SECONDS, [KEY_PATTERN, ORG_PATTERN])
        return key.group(0), org.group(1)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def reset_peak(self) -> bool:
        """Start a new peak from the current RSS (Linux: 5 > clear_refs); False if not allowed."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False


# --- The flow -----------------------------------------------------------------------------------


def timed_cp(source: Path, copy: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["cp", str(source), str(copy)], check=True)
    seconds = time.perf_counter() - start
    copy.unlink()
    return seconds


def read_range(path: Path, offset: int, size: int):
    with open(path, "rb") as handle:
        handle.seek(offset)
        left = size
        while left and (chunk := handle.read(min(CHUNK, left))):
            left -= len(chunk)
            yield chunk


class Api:
    def __init__(self, client: httpx.Client, revision_id: str):
        self.client, self.revision_id = client, revision_id

    def call(self, kind: str, command: str, **args) -> dict:
        response = self.client.post(f"/v1/revisions/{self.revision_id}/data/{kind}", json={"command": command, **args})
        if response.status_code != 200:
            raise RuntimeError(f"{command} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    def wait(self, operation_id: str, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            operation = self.client.get(f"/v1/operations/{operation_id}").json()["operation"]
            if operation["status"] in ("completed", "failed", "cancelled"):
                return operation
            time.sleep(0.25)  # each poll costs the server (and its worker) some CPU
        raise RuntimeError(f"the operation {operation_id} did not finish within {timeout} s")


def put_part(client: httpx.Client, archive: Path, part: dict) -> str:
    upload = part["upload"]
    headers = {**upload["headers"], "Content-Type": "application/octet-stream", "Content-Length": str(part["size"])}
    response = client.put(upload["url"], content=read_range(archive, part["offset"], part["size"]), headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"the part at {part['offset']} answered {response.status_code}: {response.text[:300]}")
    return response.headers["ETag"]


@dataclass
class Figures:
    archive_bytes: int = 0
    model_bytes: int = 0
    build_seconds: float = 0.0
    cp_seconds: list = field(default_factory=list)
    parts: int = 0
    transfer_seconds: float = 0.0
    processing_seconds: float = 0.0
    download_seconds: float = 0.0
    rss_kib: dict = field(default_factory=dict)
    cpu_seconds: dict = field(default_factory=dict)  # the server's, per phase
    checks: dict = field(default_factory=dict)
    phases: str = ""

    @property
    def flow_seconds(self) -> float:
        return self.transfer_seconds + self.processing_seconds


def run_flow(server: Server, key: str, org: str, archive: Path, plan: ModelPlan, model_sha256: str, parallel: int, figures: Figures) -> None:
    resettable = server.reset_peak()
    figures.rss_kib["startup"] = server.peak_rss_kib()
    limits = httpx.Limits(max_connections=parallel + 2)
    with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=600, limits=limits) as client:
        created = client.post(f"/v1/orgs/{org}/blobs", json={"alias": "bench-model", "type": "blobhub.model.onnx"})
        if created.status_code not in (200, 201):
            raise RuntimeError(f"creating the blob answered {created.status_code}: {created.text[:300]}")
        revision_id = client.get(f"/v1/blobs/{org}/bench-model/revisions").json()["revisions"][0]["id"]
        api = Api(client, revision_id)
        if resettable:
            server.reset_peak()

        # Parts need no API key: a plain client, as an uploader elsewhere would use.
        cpu = server.cpu_seconds()
        start = time.perf_counter()
        answer = api.call("command", "initiate_upload", path="model.tar.gz", size=figures.archive_bytes)
        parts = answer["operation"]["parts"]
        figures.parts = len(parts)
        with httpx.Client(timeout=600, limits=limits) as uploader, ThreadPoolExecutor(parallel) as pool:
            etags = list(pool.map(lambda part: put_part(uploader, archive, part), parts))
        api.call("command", "complete_upload", operation_id=answer["operation_id"], parts=[{"hash": etag} for etag in etags])
        figures.transfer_seconds = time.perf_counter() - start
        figures.cpu_seconds["parts"], cpu = server.cpu_seconds() - cpu, server.cpu_seconds()
        figures.rss_kib["parts"] = server.peak_rss_kib()
        if resettable:
            server.reset_peak()
        operation = api.wait(answer["operation_id"])
        figures.processing_seconds = time.perf_counter() - start - figures.transfer_seconds
        figures.cpu_seconds["processing"] = server.cpu_seconds() - cpu
        figures.rss_kib["processing"] = server.peak_rss_kib()
        if operation["status"] != "completed":
            raise RuntimeError(f"the processing did not complete: {operation}")
        time.sleep(0.2)  # the log line may trail the operation's end by a moment
        phases = PHASES_PATTERN.search("".join(server.output))
        figures.phases = phases.group(1) if phases else "(not logged)"

        model = api.call("query", "describe")["model"]
        figures.checks["describe"] = (
            model["parameters"] == plan.parameters
            and model["initializer_bytes"] >= plan.initializer_bytes
            and model["nodes"] == 2 * plan.layers
            and model["ir_version"] == 10
            and model["inputs"][0]["shape"] == ["batch", plan.width]
        )
        if not figures.checks["describe"]:
            print("describe answered:", {k: model[k] for k in ("parameters", "initializer_bytes", "nodes", "ir_version", "inputs")})

        if resettable:
            server.reset_peak()
        cpu = server.cpu_seconds()
        start = time.perf_counter()
        download = api.call("query", "initiate_download", path="model.onnx")["operation"]
        digest, received = hashlib.sha256(), 0
        for part in download["parts"]:
            with httpx.stream("GET", part["download"]["url"], headers=part["download"]["headers"], timeout=600) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"the download part at {part['offset']} answered {response.status_code}")
                for chunk in response.iter_raw(CHUNK):
                    digest.update(chunk)
                    received += len(chunk)
        figures.download_seconds = time.perf_counter() - start
        figures.cpu_seconds["download"] = server.cpu_seconds() - cpu
        figures.rss_kib["download"] = server.peak_rss_kib()
        figures.checks["download sha256"] = received == plan.size and digest.hexdigest() == model_sha256


def report(figures: Figures) -> bool:
    size_mib = figures.archive_bytes / MIB
    cp = sum(figures.cp_seconds) / len(figures.cp_seconds)
    ratio = cp / figures.flow_seconds
    peak = max(figures.rss_kib.values()) / 1024
    rows = [
        ("archive (model.tar.gz)", f"{size_mib:.0f} MiB ({figures.parts} parts); model.onnx {figures.model_bytes / MIB:.0f} MiB"),
        ("build of the archive", f"{figures.build_seconds:.1f} s"),
        ("cp of the archive", " / ".join(f"{s:.2f} s" for s in figures.cp_seconds) + f"  → {size_mib / cp:.0f} MiB/s"),
        ("parts + complete_upload", f"{figures.transfer_seconds:.2f} s  ({size_mib / figures.transfer_seconds:.0f} MiB/s)"),
        ("processing", f"{figures.processing_seconds:.2f} s  ({figures.phases})"),
        ("whole flow", f"{figures.flow_seconds:.2f} s  → {size_mib / figures.flow_seconds:.0f} MiB/s"),
        ("ratio to cp", f"{ratio:.2f}  (target ≥ {RATIO_TARGET}: {'met' if ratio >= RATIO_TARGET else 'MISSED'})"),
        ("download of model.onnx", f"{figures.download_seconds:.2f} s  ({figures.model_bytes / MIB / figures.download_seconds:.0f} MiB/s)"),
    ]
    rows += [
        (f"server CPU: {phase}", f"{seconds:.1f} s  ({seconds / (size_mib / 1024):.1f} s per GiB)")
        for phase, seconds in figures.cpu_seconds.items()
    ]
    rows.append(("load average (1 min)", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"))
    rows += [(f"peak RSS: {phase}", f"{kib / 1024:.0f} MiB") for phase, kib in figures.rss_kib.items()]
    rows.append(("peak RSS", f"{peak:.0f} MiB  (target < {RSS_TARGET_MIB}: {'met' if peak < RSS_TARGET_MIB else 'MISSED'})"))
    rows += [(f"check: {name}", "ok" if ok else "FAILED") for name, ok in figures.checks.items()]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return all(figures.checks.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="initializer bytes of the model (default 1024)")
    parser.add_argument("--parallel", type=int, default=2, help="parts uploaded at a time (default 2)")
    parser.add_argument("--gzip-level", type=int, default=1, help="compression level of the archive (default 1)")
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="where the temp files go (default: the temp dir)")
    args = parser.parse_args()

    needed = args.size_mib * MIB * 7  # archive, its copy, the parts, the assembled archive, the model, spools
    free = shutil.disk_usage(args.workdir).free
    print(f"free space in {args.workdir}: {free / 1024**3:.1f} GiB (needs about {needed / 1024**3:.1f})")
    if free < needed:
        print("not enough free space", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="blobhub-onnx-bench-", dir=args.workdir))
    server = None
    figures = Figures()
    try:
        plan = plan_for(args.size_mib * MIB)
        archive = work / "model.tar.gz"
        start = time.perf_counter()
        model_sha256 = write_archive(plan, archive, args.gzip_level)
        figures.build_seconds = time.perf_counter() - start
        figures.archive_bytes, figures.model_bytes = archive.stat().st_size, plan.size
        print(f"built {archive.name}: {figures.archive_bytes / MIB:.0f} MiB, model {plan.size / MIB:.0f} MiB"
              f" ({plan.layers} layers of {plan.width}×{plan.width}; gzip level {args.gzip_level},"
              f" {deflater(args.gzip_level).__name__}) in {figures.build_seconds:.1f} s", flush=True)

        server = Server(work / "data")
        key, org = server.key_and_org()
        figures.cp_seconds.append(timed_cp(archive, work / "copy.tar.gz"))
        run_flow(server, key, org, archive, plan, model_sha256, args.parallel, figures)
        figures.cp_seconds.append(timed_cp(archive, work / "copy.tar.gz"))
    except BaseException:
        if server is not None:
            sys.stderr.write("".join(server.output[-40:]))
        raise
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
