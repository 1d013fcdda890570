"""What the deploy tests share: real processes (sinkserve replicas, Prometheus, nginx) on
loopback ports, and gRPC stubs generated from proto/ with grpcio-tools at test time."""
import contextlib
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


def stubs():
    """The generated sinkserve.v1 modules (sinkserve_pb2, sinkserve_pb2_grpc)."""
    out = Path(tempfile.mkdtemp(prefix="sinkserve-stubs-"))
    from grpc_tools import protoc
    code = protoc.main(["protoc", f"-I{SOURCE_DIR / 'proto'}", f"--python_out={out}",
                        f"--grpc_python_out={out}",
                        str(SOURCE_DIR / "proto/sinkserve/v1/sinkserve.proto")])
    assert code == 0, "protoc failed"
    sys.path.insert(0, str(out))
    return (importlib.import_module("sinkserve.v1.sinkserve_pb2"),
            importlib.import_module("sinkserve.v1.sinkserve_pb2_grpc"))


class Process:
    """A child process with its output in a log file; killed at exit if still running."""

    def __init__(self, argv: list[str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout_s: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        code = self.popen.wait(timeout_s)
        self._log.close()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class Sinkserve(Process):
    """`sinkserve serve` on free loopback ports (demo model unless `args` say otherwise)."""

    def __init__(self, binary: str, work: Path, server_id: str, args: tuple[str, ...] = ()):
        self.port, self.metrics_port, self.http_port = free_port(), free_port(), free_port()
        self.server_id = server_id
        super().__init__([binary, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                          "--metrics-port", str(self.metrics_port), "--http-port",
                          str(self.http_port), "--server-id", server_id,
                          "--threads", "1", "--log-format", "json", *args],
                         work / f"{server_id}.log")

    def wait_serving(self, timeout_s: float = 60) -> None:
        def serving():
            assert self.popen.poll() is None, f"{self.server_id} exited:\n{self.log()}"
            for line in self.log().splitlines():
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("msg") == "serving":
                        return True
            return False
        wait_for(serving, timeout_s, f"{self.server_id} to serve")


def metric(server: Sinkserve, query: str) -> float:
    """The value of the first series named as `query` that carries its labels (in any order,
    among others such as model_name), or 0."""
    name, _, labels = query.partition("{")
    want = dict(re.findall(r'(\w+)="([^"]*)"', labels))
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as response:
        for line in response.read().decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            series, value = line.rsplit(" ", 1)
            series_name, _, series_labels = series.partition("{")
            have = dict(re.findall(r'(\w+)="([^"]*)"', series_labels))
            if series_name == name and all(have.get(k) == v for k, v in want.items()):
                return float(value)
    return 0.0


class Prometheus(Process):
    """A real Prometheus with `config` (a dict, written as YAML) on a free port."""

    def __init__(self, config: dict, work: Path):
        import yaml
        self.port = free_port()
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        super().__init__(["prometheus", f"--config.file={work / 'prometheus.yml'}",
                          f"--storage.tsdb.path={work / 'prometheus-data'}",
                          f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                         work / "prometheus.log")

    def wait_scraped(self, job: str, timeout_s: float = 60) -> None:
        def scraped():
            assert self.popen.poll() is None, f"prometheus exited:\n{self.log()}"
            try:
                return self.query(f'up{{job="{job}"}} == 1')
            except OSError:  # not listening yet
                return False
        wait_for(scraped, timeout_s, f"Prometheus to scrape {job}")

    def query(self, promql: str) -> list:
        """The result vector of an instant query (raises on a query error)."""
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", f"{promql}: {body}"
        return body["data"]["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        url = (f"http://127.0.0.1:{self.port}/api/v1/label/{label}/values?"
               + urllib.parse.urlencode({"match[]": match}))
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)["data"]


def require_tools(*names: str) -> list[str]:
    """The tools' paths; exit 77 (ctest's skip code) when one is missing: scripts/install-deps.sh
    installs them."""
    import shutil
    paths = [shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin") for name in names]
    missing = [name for name, path in zip(names, paths) if path is None]
    if missing:
        print(f"SKIP: {', '.join(missing)} not installed (scripts/install-deps.sh installs them)")
        sys.exit(77)
    return paths
