"""A Jetson Nano on 127.0.0.1 for the ``ssh-trtexec`` runner's tests: a real SSH server, the real OpenSSH client.

The server is asyncssh's, in a thread of the test process, listening on 127.0.0.1 only and stopped by the fixture;
it runs each command with ``/bin/sh``, streaming its input and output. On the "device", stand-in
``trtexec``, ``nvpmodel`` and ``jetson_clocks`` are the only fakes: trtexec replays real logs from
``../shared/fixtures/trtexec/`` (a TensorRT 8.2.1 build on a Jetson Nano, an 8.2 ``--loadEngine`` run, a failed
build) and writes ``--exportTimes`` and ``--exportOutput`` files of the real schema; its "engine" is the ONNX file,
which it runs with ONNX Runtime for ``--exportOutput``. nvpmodel and jetson_clocks print L4T's formats (from NVIDIA's
power-management guide, not recorded on a device).
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import textwrap
import threading
from pathlib import Path

import asyncssh

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "trtexec"
BUILD_LOG = "01_jetson-nano_trt8.2.1_fp32-build_ufld.log"
LOAD_LOG = "07_gtx1070_trt8.2.3_loadEngine_verbose_engine-loaded.log"
FAILED_BUILD_LOG = "06_trt10.3_FAILED_onnx-parse_mobilesam-decoder.log"

TRTEXEC = '''
"""Stand-in trtexec: replays real logs; the engine is the ONNX file itself."""
import json, os, shutil, sys, time
from pathlib import Path

fixtures = Path(os.environ["FAKE_FIXTURES"])
args = dict(arg[2:].split("=", 1) if "=" in arg else (arg[2:], "") for arg in sys.argv[1:])
banner = "&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec " + " ".join(sys.argv[1:])
if "help" in args:
    print(banner)
    print("=== Model Options ===")
    if os.environ.get("FAKE_TIME_DESERIALIZE"):  # TensorRT 8.4+ has the flag; the Nano's 8.2 does not
        print("  --timeDeserialize           Time the amount of time it takes to deserialize the network and exit.")
    sys.exit(0)
if "onnx" in args:
    if os.environ.get("FAKE_BUILD_FAILS"):
        print((fixtures / "{failed}").read_text())
        sys.exit(1)
    shutil.copyfile(args["onnx"], args["saveEngine"])
    print((fixtures / "{build}").read_text())
    sys.exit(0)
engine = Path(args["loadEngine"])
if not engine.is_file():
    print("[E] Engine file not found: " + str(engine))
    sys.exit(1)
if "timeDeserialize" in args:  # the two lines trtexec 8.6+ prints (its source; no real log is public)
    print(banner)
    print("[12/02/2026-10:00:00] [I] First deserialization time = 612.5 milliseconds")
    print("[12/02/2026-10:00:12] [I] Total deserialization time = 11900 milliseconds in 20 iterations, "
          "average time = 595 milliseconds, first time = 612.5 milliseconds.")
    print(banner.replace("RUNNING", "PASSED"))
    sys.exit(0)
time.sleep(float(os.environ.get("FAKE_RUN_SECONDS", "0")))
if os.environ.get("FAKE_HEATS_TO"):  # the GPU zone heats up while the engine runs
    Path(os.environ["FAKE_GPU_ZONE"], "temp").write_text(os.environ["FAKE_HEATS_TO"] + "\\n")
if "exportOutput" in args:
    import numpy as np, onnxruntime as ort
    session = ort.InferenceSession(str(engine), providers=["CPUExecutionProvider"])
    feeds = {{}}
    for spec in args["loadInputs"].split(","):
        name, path = spec.split(":", 1)
        shape = next(i.shape for i in session.get_inputs() if i.name == name)
        feeds[name] = np.fromfile(path, dtype=np.float32).reshape(shape)
    outputs = session.run(None, feeds)
    entries = [{{"name": o.name, "dimensions": "x".join(map(str, v.shape)), "values": v.ravel().tolist()}}
               for o, v in zip(session.get_outputs(), outputs)]
    Path(args["exportOutput"]).write_text(json.dumps(entries))
if "exportTimes" in args:
    queries = int(args.get("iterations", "10"))
    start, times = 100.0, []
    for i in range(queries):  # around the Jetson Nano log's latency (89.3-91.5 ms), deterministic
        compute = 89.0 + (i * 7 % 11) * 0.2
        h2d, d2h = 0.277, 0.008
        latency = h2d + compute + d2h
        times.append({{"startEnqMs": start, "endEnqMs": start + 6.2, "startH2dMs": start, "endH2dMs": start + h2d,
                      "startComputeMs": start + h2d, "endComputeMs": start + h2d + compute,
                      "startD2hMs": start + h2d + compute, "endD2hMs": start + latency, "h2dMs": h2d,
                      "computeMs": compute, "d2hMs": d2h, "latencyMs": latency, "endToEndMs": latency + 0.013}})
        start += latency
    Path(args["exportTimes"]).write_text(json.dumps(times, indent=2))
print((fixtures / "{load}").read_text())
'''.format(build=BUILD_LOG, load=LOAD_LOG, failed=FAILED_BUILD_LOG)

NVPMODEL = '''
print("NV Fan Mode:quiet")
print("NV Power Mode: MAXN")
print("0")
'''

JETSON_CLOCKS = '''
import os
current = os.environ.get("FAKE_GPU_HZ", "921600000")
print("SOC family:tegra210  Machine:NVIDIA Jetson Nano Developer Kit")
print("Online CPUs: 0-3")
print("cpu0: Online=1 Governor=schedutil MinFreq=1479000 MaxFreq=1479000 CurrentFreq=1479000 IdleStates: WFI=0 c7=0")
print("GPU MinFreq=921600000 MaxFreq=921600000 CurrentFreq=" + current)
print("EMC MinFreq=204000000 MaxFreq=1600000000 CurrentFreq=1600000000 FreqOverride=1")
print("Fan: PWM=255")
print("NV Power Mode: MAXN")
'''


class FakeJetson:
    """The SSH server and the device's file system under ``root``; ``env`` is the device's environment."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "usr" / "bin"
        self.remote_dir = root / "tmp" / "rbench"
        self.thermal = root / "sys" / "thermal"
        self.env = {"PATH": f"{self.bin}:{os.environ['PATH']}", "FAKE_FIXTURES": str(FIXTURES),
                    "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncssh.SSHAcceptor | None = None
        self._connections: list[asyncssh.SSHServerConnection] = []
        self.commands: list[str] = []

    @property
    def trtexec(self) -> Path:
        return self.bin / "trtexec"

    def install(self) -> None:
        """The stand-in tools and a GPU thermal zone with a passive (97 °C) and a critical trip point."""
        self.bin.mkdir(parents=True)
        for name, source in (("trtexec", TRTEXEC), ("nvpmodel", NVPMODEL), ("jetson_clocks", JETSON_CLOCKS)):
            script = self.bin / name
            script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(source))
            script.chmod(script.stat().st_mode | stat.S_IEXEC)
        zone = self.thermal / "thermal_zone1"
        zone.mkdir(parents=True)
        for name, value in (("type", "GPU-therm"), ("temp", "41500"), ("trip_point_0_type", "critical"),
                            ("trip_point_0_temp", "105000"), ("trip_point_1_type", "passive"),
                            ("trip_point_1_temp", "97000")):
            (zone / name).write_text(value + "\n")
        self.env["FAKE_GPU_ZONE"] = str(zone)

    def cool_down(self) -> None:
        """The GPU zone back at its idle temperature (after a test that heated it)."""
        (self.thermal / "thermal_zone1" / "temp").write_text("41500\n")

    def start(self, client_key: asyncssh.SSHKey, host_key: asyncssh.SSHKey) -> None:
        self.install()
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(client_key, host_key), self._loop).result(30)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _listen(self, client_key: asyncssh.SSHKey, host_key: asyncssh.SSHKey) -> asyncssh.SSHAcceptor:
        device = self

        class Server(asyncssh.SSHServer):
            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                device._connections.append(conn)

        return await asyncssh.create_server(
            Server, "127.0.0.1", 0, server_host_keys=[host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(client_key.export_public_key().decode()),
            process_factory=self._run, encoding=None)

    async def _run(self, process: asyncssh.SSHServerProcess) -> None:
        """Run the client's command with the device's shell and environment, streaming stdin, stdout and stderr."""
        self.commands.append(process.command or "")
        local = await asyncio.create_subprocess_shell(
            process.command or "true", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=dict(self.env), start_new_session=True)

        async def feed() -> None:
            while data := await process.stdin.read(1 << 16):
                local.stdin.write(data)
                await local.stdin.drain()
            local.stdin.close()

        async def pump(source: asyncio.StreamReader, sink: asyncssh.SSHWriter) -> None:
            while data := await source.read(1 << 16):
                sink.write(data)

        feeding = asyncio.ensure_future(feed())
        try:
            await asyncio.gather(pump(local.stdout, process.stdout), pump(local.stderr, process.stderr))
            process.exit(await local.wait())
        finally:  # the client went away (a dropped connection, a timeout): the command dies with its session
            feeding.cancel()
            if local.returncode is None:
                local.kill()
                await local.wait()
            if not local.stdin.is_closing():  # a command that exits without reading all its input
                local.stdin.close()

    def drop_connections(self) -> None:
        """Cut every open connection, as a device that reboots or leaves the network does."""
        def abort() -> None:
            for conn in self._connections:
                conn.abort()
        self._loop.call_soon_threadsafe(abort)

    def stop(self) -> None:
        """Close the server, end every session and its command, then the loop: nothing outlives the tests."""
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for conn in self._connections:
                conn.abort()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await asyncio.sleep(0.1)  # let the subprocess transports see their pipes close
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


def ssh_config(path: Path, device: FakeJetson, key_file: Path, known_hosts: Path) -> Path:
    """An ssh_config with a ``nano`` alias for the device: real host-key checking, key authentication only."""
    path.write_text(textwrap.dedent(f"""\
        Host nano
          HostName 127.0.0.1
          Port {device.port}
          User nvidia
          IdentityFile {key_file}
          IdentitiesOnly yes
          UserKnownHostsFile {known_hosts}
          StrictHostKeyChecking yes
          LogLevel ERROR
        """))
    return path
