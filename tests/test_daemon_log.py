"""The daemons' own logs: one JSON object per line (a sentence plus key/values), secrets never written.

The formatters are checked on records made by real loggers; the whole contract is checked on the
logs of a real aggregator and agent run (agent/localrun.py) that fires an alert at a failing webhook
whose URL carries a token.
"""

from __future__ import annotations

import ast
import datetime as dt
import http.server
import io
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from agent import daemon_log
from agent.localrun import LocalProcess, Workspace, logseal_command, wait_for
from tests.conftest import run_cli
from tests.tls_material import make_tls_material

FALCO = Path(__file__).parent / "data" / "falco"
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TOKEN = "tok-3f9a1c77e2d54b0c"
PEM_KEY = ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n"
           "-----END PRIVATE KEY-----\n")


def emit(log_format: str, level: int, msg: str, **kwargs: object) -> str:
    """What one record looks like through the daemon handler in `log_format`."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(daemon_log.JsonFormatter() if log_format == "json" else daemon_log.TextFormatter())
    logger = logging.getLogger("logseal.test")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        logger.log(level, msg, **kwargs)  # type: ignore[arg-type]
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    return out.getvalue()


def test_a_record_is_one_json_line_with_the_sentence_and_its_key_values() -> None:
    before = dt.datetime.now(dt.UTC)
    line = emit("json", logging.WARNING, "batch rejected", extra={"verdict": "UNKNOWN_NODE", "seq": 7,
                                                                   "streams": ["a", "b"], "path": Path("/x y")})
    assert line.endswith("\n") and line.count("\n") == 1
    record = orjson.loads(line)
    assert list(record)[:4] == ["time", "level", "logger", "msg"]
    assert record == {"time": record["time"], "level": "WARNING", "logger": "logseal.test", "msg": "batch rejected",
                      "verdict": "UNKNOWN_NODE", "seq": 7, "streams": ["a", "b"], "path": "/x y"}
    assert RFC3339_UTC.match(record["time"])
    logged_at = dt.datetime.fromisoformat(record["time"])
    assert before - dt.timedelta(seconds=1) <= logged_at <= dt.datetime.now(dt.UTC)


def test_an_exception_stays_inside_its_line() -> None:
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        line = emit("json", logging.ERROR, "detection failed on a batch; going on", exc_info=True)
    assert line.count("\n") == 1
    record = orjson.loads(line)
    assert record["msg"] == "detection failed on a batch; going on"
    assert record["exception"].startswith("Traceback") and "RuntimeError: boom\nsecond line" in record["exception"]


def test_text_format_keeps_a_readable_line_with_key_values() -> None:
    line = emit("text", logging.INFO, "aggregator serving", extra={"address": "127.0.0.1:7443", "tls": True,
                                                                    "store": "/var/lib/log seal"})
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z INFO logseal.test: aggregator serving address=127.0.0.1:7443 "
                    r'tls=true store="/var/lib/log seal"\n$', line), line


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_secrets_are_masked_whatever_the_call_site_passes(log_format: str) -> None:
    out = emit(log_format, logging.ERROR, f"could not load {PEM_KEY}", extra={
        "reason": f"POST https://hec:{TOKEN}@siem.example/services/collector?token={TOKEN}: HTTP 503",
        "auth_token": TOKEN, "headers": {"Authorization": f"Splunk {TOKEN}", "x": f"Bearer {TOKEN}"},
        "truncated": PEM_KEY[:60]})
    assert TOKEN not in out and "PRIVATE KEY" not in out and "MC4CAQAwBQYDK2Vw" not in out
    assert "https://[redacted]@siem.example/services/collector?[redacted]" in out
    if log_format == "json":
        record = orjson.loads(out)
        assert record["auth_token"] == "[redacted]" and record["headers"]["Authorization"] == "[redacted]"
        assert record["headers"]["x"] == "Bearer [redacted]"
        assert record["msg"] == "could not load [redacted private key]\n"


def test_log_format_is_a_daemon_option_and_is_checked() -> None:
    result = run_cli("aggregator", "--config", "x.toml", "--log-format", "yaml")
    assert result.returncode == 2 and "--log-format" in result.stderr and "json" in result.stderr


class _Failing(http.server.BaseHTTPRequestHandler):
    """A webhook that is down: every alert is retried, and the failure (with its URL) is logged."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_webhook() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def assert_json_log(proc: LocalProcess, secrets: list[str]) -> list[dict[str, object]]:
    text = proc.log_text()
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            pytest.fail(f"{proc.log_path}:{number} is not JSON: {line!r}")
        assert isinstance(record, dict) and {"time", "level", "logger", "msg"} <= set(record), line
        assert RFC3339_UTC.match(record["time"]) and record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR",
                                                                         "CRITICAL"), line
        assert isinstance(record["msg"], str) and record["msg"] and "=" not in record["msg"], line
        records.append(record)
    assert records, f"{proc.log_path} is empty"
    assert "PRIVATE KEY" not in text
    for secret in secrets:
        assert secret not in text
    return records


def test_daemon_logs_of_a_real_run_are_json_lines_without_secrets(workspace: Workspace, failing_webhook: int) -> None:
    audit = workspace.root / "audit.log"
    audit.write_bytes((FALCO / "create_nginx_pod_privileged.json").read_bytes().rstrip(b"\n") + b"\n")
    node_key = workspace.enrol("node-1")
    aggregator = workspace.start_aggregator(extra=(
        '[detect]\nrules = ["builtin:kubernetes"]\n'
        f'[[alert_output]]\ntype = "webhook"\nmin_level = "low"\nbackoff_initial_ms = 50\nbackoff_max_ms = 200\n'
        f'url = "http://127.0.0.1:{failing_webhook}/alerts?token={TOKEN}"\n'))
    agent = workspace.start_agent(workspace.agent_config("node-1", [("k8s_audit", str(audit))]))
    wait_for(lambda: bool(aggregator.logged("alert output failing; will retry")), 60,
             "the aggregator to log the failing webhook")
    assert agent.stop() == 0
    assert aggregator.stop() == 0

    key_bodies = [line for path in (node_key, workspace.store / "aggregator.key")
                  for line in path.read_text().splitlines() if "-----" not in line]
    assert key_bodies
    agg = assert_json_log(aggregator, [TOKEN, *key_bodies])
    ag = assert_json_log(agent, [TOKEN, *key_bodies])
    (serving,) = [r for r in agg if r["msg"] == "aggregator serving"]
    assert serving["tls"] is False and serving["nodes"] == 1 and serving["detection"] == ["builtin:kubernetes"]
    failing = [r for r in agg if r["msg"] == "alert output failing; will retry"]
    assert "[redacted]" in str(failing[0]["reason"]) and "503" in str(failing[0]["reason"])
    (stopped,) = [r for r in ag if r["msg"] == "agent stopped"]
    assert stopped["stored"] >= 1 and stopped["pending_batches"] == 0  # type: ignore[operator]


def test_text_format_on_request(workspace: Workspace) -> None:
    workspace.enrol("node-1")
    workspace.start_aggregator().stop()
    proc = LocalProcess("aggregator", [*logseal_command(), "aggregator", "--config",
                                       str(workspace.root / "aggregator.toml"), "--log-format", "text"],
                        workspace.root / "text.log")
    proc.start()
    workspace.processes.append(proc)
    wait_for(lambda: "aggregator serving" in proc.log_text(), 30, "the aggregator to serve")
    assert proc.stop() == 0
    line = next(ln for ln in proc.log_text().splitlines() if "aggregator serving" in ln)
    assert re.search(r" INFO agent\.aggregator\.server: aggregator serving address=127\.0\.0\.1:\d+ .*tls=false", line)
    assert not proc.log_records()


def test_a_daemon_that_cannot_start_says_why_in_one_json_line(tmp_path: Path) -> None:
    config = tmp_path / "aggregator.toml"
    config.write_text(f'listen = "127.0.0.1:0"\nstore_dir = "{tmp_path / "store"}"\ntrusted_keys_dir = "{tmp_path}"\n'
                      "colour = 3\n")
    result = run_cli("aggregator", "--config", str(config))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    record = orjson.loads(line)
    assert record["level"] == "ERROR" and record["msg"] == "cannot start; fix the error and start again"
    assert "colour: unknown key" in record["error"]
    text = run_cli("aggregator", "--config", str(config), "--log-format", "text")
    assert text.returncode == 2 and text.stderr.startswith("logseal: error: ") and "colour" in text.stderr


@pytest.mark.parametrize(("where", "code"), [
    ("main thread", "raise RuntimeError('boom at start')"),
    ("thread", "t = threading.Thread(target=lambda: 1 / 0, name='worker'); t.start(); t.join()"),
])
def test_an_uncaught_error_is_one_json_record(where: str, code: str) -> None:
    program = f"import threading\nfrom agent.daemon_log import setup\nsetup('json')\n{code}\n"
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    (line,) = result.stderr.splitlines()
    record = orjson.loads(line)
    assert record["level"] == "CRITICAL" and record["logger"] == "logseal.crash"
    if where == "thread":
        assert record["msg"] == "uncaught exception in a thread" and record["thread_name"] == "worker"
        assert "ZeroDivisionError" in record["exception"] and result.returncode == 0
    else:
        assert record["msg"] == "uncaught exception; the daemon stops" and result.returncode == 1
        assert "RuntimeError: boom at start" in record["exception"]


def test_no_call_site_passes_a_key_that_logging_reserves() -> None:
    """logging raises KeyError for an `extra` key that names a LogRecord attribute, on that rare path only."""
    reserved = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
    reserved |= set(daemon_log._BASE_FIELDS)
    seen = 0
    for path in (Path(__file__).parents[1] / "agent").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if kw.arg == "extra" and isinstance(kw.value, ast.Dict):
                    keys = [k.value for k in kw.value.keys if isinstance(k, ast.Constant)]
                    seen += len(keys)
                    assert not reserved & set(keys), f"{path}:{node.lineno}: {sorted(reserved & set(keys))}"
            if isinstance(node.func, ast.Attribute) and node.func.attr == "_warn_once":
                names = {kw.arg for kw in node.keywords}
                assert not reserved & names, f"{path}:{node.lineno}: {sorted(reserved & names)}"
    assert seen > 100  # the call sites were found


def test_refused_tls_handshakes_do_not_break_the_json_lines(workspace: Workspace) -> None:
    """gRPC's C core would write a text line per failed handshake; the daemons keep it to errors."""
    tls = make_tls_material(workspace.root / "tls")
    log = workspace.root / "auth.log"
    log.write_bytes(b"Nov 26 10:00:00 h sshd[1]: Accepted password for a from 10.0.0.1 port 1 ssh2\n")
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator(extra=f'[tls]\nca = "{tls["ca"]}"\ncert = "{tls["server"]}"\n'
                                                  f'key = "{tls["server-key"]}"\n')
    plaintext = workspace.start_agent(workspace.agent_config(
        "node-1", [("syslog", str(log))], extra="[ship]\nbackoff_initial_ms = 20\nbackoff_max_ms = 100\n"))
    wait_for(lambda: len(plaintext.logged("aggregator stream ended; will reconnect")) >= 5, 60,
             "the plaintext agent to be turned away five times")
    assert plaintext.stop() == 0
    assert aggregator.stop() == 0
    assert_json_log(aggregator, [])
    assert_json_log(plaintext, [])
