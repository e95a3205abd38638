"""The production image (Dockerfile), built and run with podman: the whole product flow against
the emulator on the host, as a non-root user on a read-only root filesystem, and a clean stop.

The container shares the host's network namespace and listens on 127.0.0.1 only, so the
emulator (in this test process) and the service reach each other over loopback and nothing is
published beyond it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.deploy.containers import ROOT, podman_env, require_podman
from tests.e2e.test_flow import VISA, next_event
from tests.fixtures.antom import CLIENT_ID, buyer_submits
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.antom import PrivateKey
from vault_service.emulator import EmulatorServer

pytestmark = pytest.mark.timeout(600)  # the first build makes the base image and downloads

TAG = "localhost/vault-service:smoke"
IMAGE_UID = 10001
SHUTDOWN_GRACE = 5  # VAULT_SHUTDOWN_GRACE in the container
STOP_TIMEOUT = 15  # podman stop's SIGKILL deadline, like terminationGracePeriodSeconds
KEYS = "/etc/vault-service/keys"  # where the manifests mount the Secrets, read-only


def podman(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        ["podman", *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"podman {args[0]} failed: {done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built by scripts/build-image (hadolint first, layers cached between runs)."""
    require_podman()
    built = subprocess.run(
        [str(ROOT / "scripts" / "build-image"), TAG],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"scripts/build-image failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}")
    print(built.stdout.strip().splitlines()[-1])  # the image's size, for the record
    return TAG


@pytest.fixture
def secrets_dir(tmp_path: Path, merchant_key: PrivateKey, antom_key: PrivateKey) -> Path:
    """The files the Secrets hold, readable by the image's user (Kubernetes' defaultMode
    0440 with fsGroup does the same)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "merchant-private-key.pem").write_bytes(merchant_key.to_pkcs8_pem())
    (keys / "antom-public-key.pem").write_bytes(antom_key.public_key().to_spki_pem())
    data_key = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "vault-service"),
            "add-data-key",
            str(keys / "data-keys.json"),
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert data_key.returncode == 0, data_key.stderr
    for path in (keys, *keys.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o444)
    return keys


@pytest.fixture
def data_volume() -> Iterator[str]:
    """A fresh volume for /var/lib/vault-service; podman gives it the image directory's owner
    (the image's user), as fsGroup does on Kubernetes."""
    name = f"vault-smoke-{uuid.uuid4().hex[:12]}"
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "--force", name)


@dataclass
class Container:
    name: str
    process: asyncio.subprocess.Process
    grpc_port: int
    log: list[dict[str, str]]


@pytest.fixture
async def container(
    image: str, secrets_dir: Path, data_volume: str, emulator: EmulatorServer
) -> AsyncIterator[Container]:
    """`vault-service serve` in the image, hardened as the manifests run it: read-only root
    filesystem with no tmpfs, every capability dropped, no new privileges."""
    name = f"vault-smoke-{uuid.uuid4().hex[:12]}"
    settings = {
        "VAULT_GRPC_LISTEN": "127.0.0.1:0",
        "VAULT_HTTP_LISTEN": "127.0.0.1:0",
        "VAULT_ADMIN_LISTEN": "127.0.0.1:0",
        "VAULT_AUTO_MIGRATE": "1",
        "VAULT_ANTOM_BASE_URL": emulator.base_url,
        "VAULT_ANTOM_CLIENT_ID": CLIENT_ID,
        "VAULT_MERCHANT_PRIVATE_KEY_FILE": f"{KEYS}/merchant-private-key.pem",
        "VAULT_ANTOM_PUBLIC_KEY_FILE": f"{KEYS}/antom-public-key.pem",
        "VAULT_DATA_KEY_FILE": f"{KEYS}/data-keys.json",
        "VAULT_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE),
        "VAULT_CHECKPOINT_INTERVAL": "0.2",
    }
    process = await asyncio.create_subprocess_exec(
        "podman",
        "run",
        "--rm",
        f"--name={name}",
        "--network=host",
        "--read-only",
        "--read-only-tmpfs=false",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        f"--stop-timeout={STOP_TIMEOUT}",
        f"--volume={secrets_dir}:{KEYS}:ro",
        f"--volume={data_volume}:/var/lib/vault-service",
        *(f"--env={key}={value}" for key, value in settings.items()),
        image,
        env=podman_env(),
        stderr=asyncio.subprocess.PIPE,
    )
    log: list[dict[str, str]] = []
    assert process.stderr is not None
    async with asyncio.timeout(60):
        while True:
            line = await process.stderr.readline()
            assert line, f"the container exited before serving: {log}"
            try:
                entry = json.loads(line)
            except ValueError:
                pytest.fail(f"not a JSON log line: {line!r}")
            log.append(entry)
            if entry["message"] == "vault-service serving":
                grpc_port = int(entry["listen"].split("grpc :")[1].split(",")[0])
                break
    yield Container(name, process, grpc_port, log)
    if process.returncode is None:
        await asyncio.to_thread(podman, "rm", "--force", "--time=0", name)
        await process.wait()


async def test_the_image_serves_the_whole_flow_as_non_root_and_stops_cleanly(
    container: Container, emulator: EmulatorServer
) -> None:
    """Health SERVING, CreateSession → the buyer → Antom's notification to the container's
    webhook → the event on StreamResults; the process runs as the image's numeric user; and
    `podman stop` (SIGTERM) ends it by itself, exit 0, before the SIGKILL deadline."""
    target = f"127.0.0.1:{container.grpc_port}"
    async with grpc.aio.insecure_channel(target) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        stub = pb_grpc.VaultServiceStub(channel)
        stream = stub.StreamResults(pb.StreamResultsRequest())
        created = await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id="image-1"))
        await buyer_submits(emulator, created.session_data, VISA)
        event = await next_event(stream)
        assert event.result.vaulting_request_id == "image-1"
        assert event.result.status == pb.VAULTING_STATUS_SUCCEEDED
        stream.cancel()

    identity = await asyncio.to_thread(podman, "exec", container.name, "id", "-u")
    assert int(identity) == IMAGE_UID
    inspected = json.loads(await asyncio.to_thread(podman, "inspect", container.name))[0]
    assert inspected["Config"]["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True

    await asyncio.to_thread(podman, "stop", f"--time={STOP_TIMEOUT}", container.name)
    async with asyncio.timeout(STOP_TIMEOUT + 10):
        code = await container.process.wait()
    assert code == 0, "the service did not exit by itself within podman stop's grace"


async def test_the_image_is_labelled_and_runs_its_own_virtualenv(image: str) -> None:
    """OCI labels, the entrypoint and user the manifests rely on, and no compiler shipped."""
    config = json.loads(await asyncio.to_thread(podman, "image", "inspect", image))[0]["Config"]
    assert config["Entrypoint"] == ["vault-service"]
    assert config["Cmd"] == ["serve"]
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    labels = config["Labels"]
    for label in ("title", "version", "revision", "created", "licenses"):
        assert labels.get(f"org.opencontainers.image.{label}"), label
    found = await asyncio.to_thread(
        podman,
        "run",
        "--rm",
        "--entrypoint=sh",
        image,
        "-c",
        "command -v vault-service; command -v gcc cc c99 || true",
    )
    assert found.split() == ["/opt/vault-service/bin/vault-service"]
